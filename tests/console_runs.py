"""A console script run inside the test's process: what it printed and its exit status, in about a second.

A subprocess costs a process start (5-10 s here: torch, Lightning and Hydra imported again); most tests of
a script's one-line errors need none, so they call the installed entry point (the ``console_scripts`` entry
the package declares, the function the script file calls) with its command line, as
:func:`run_in_process` does. What a run changes in the process is put back when it returns: the command
line, the environment, the working directory, Hydra's global state, the logging handlers Hydra's job
logging adds and the run folder's lock. What it cannot show: warnings (pytest records them), lines of
handlers made before the run (Lightning's device summary), and what C code writes to the file descriptor.
The tests that need a real process (another process's lock, a signal, the stderr of a process as a whole)
keep running the script itself (``tests/test_user_errors.py`` runs one user error of each console script
through the installed script).
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

# Offline, as every test runs the scripts: no hub, no wandb server, no albumentations update check.
OFFLINE = {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
# Variables a user's shell may hold that change how a script reports an error: unset unless a test sets them.
CLEARED_VARIABLES = ("HYDRA_FULL_ERROR",)


@dataclass(frozen=True)
class ScriptResult:
    """What a console script printed, and its exit status (0 when it returned)."""

    returncode: int
    stdout: str
    stderr: str


def script_entry(script: str):
    """The ``console_scripts`` entry point the package declares for ``script``."""
    (entry,) = (entry for entry in entry_points(group="console_scripts") if entry.name == script)
    return entry


def console_script(script: str):
    """The function the installed console script ``script`` calls."""
    return script_entry(script).load()


def exit_status(stop: SystemExit) -> int:
    """The status a process ending with ``stop`` exits with (``sys.exit``'s rules)."""
    if stop.code is None:
        return 0
    return stop.code if isinstance(stop.code, int) else 1


@contextlib.contextmanager
def restored_process_state():
    """Put back what a console script run in this process changes (module docstring)."""
    argv, environment, cwd = sys.argv[:], dict(os.environ), Path.cwd()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        # A run that ended in SystemExit leaves its run-folder claim to the garbage collector (Hydra calls no
        # end-of-run callback then; a process's exit would release the lock).
        gc.collect()
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environment)
        sys.argv[:] = argv


def run_in_process(
    script: str, *arguments: str, environment: dict[str, str] | None = None, cwd: Path | None = None
) -> ScriptResult:
    """Run the console script ``script`` with ``arguments`` in this process, offline (:data:`OFFLINE`) and
    ``environment`` added to the environment, from the folder ``cwd`` (default: this process's); its stdout
    and stderr are captured."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with restored_process_state():
        if cwd is not None:
            os.chdir(cwd)
        for variable in CLEARED_VARIABLES:
            os.environ.pop(variable, None)
        os.environ.update({**OFFLINE, **(environment or {})})
        sys.argv[:] = [script, *arguments]
        status = 0
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                console_script(script)()
            except SystemExit as stop:
                status = exit_status(stop)
    return ScriptResult(status, stdout.getvalue(), stderr.getvalue())

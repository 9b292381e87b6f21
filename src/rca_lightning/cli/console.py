"""How the console scripts end: a user error is one line on stderr and exit status 2.

Hydra prints a (trimmed) traceback for every exception and exits 1. The console scripts ask Hydra to hand
every exception on (``HYDRA_FULL_ERROR``) and decide here: a :class:`~rca_lightning.utils.errors.UserError`
anywhere in the exception's cause chain, or a settings error found while composing the configuration, is
printed as ``<script>: error: <message>`` and the script exits 2; anything else is a bug, printed with its
traceback (exit 1). ``HYDRA_FULL_ERROR=1`` set by the user shows every traceback, as Hydra does.

The cause chain is made of explicit causes only (``raise ... from error``: what Hydra's ``instantiate`` does
with a constructor's error, what the project does wherever it turns an error into a user error). An
exception raised while a user error was being handled, without ``from``, is a new failure: a bug, not that
user error. One hand-over has no ``from``: Hydra turns a callback's exception into a warning, which
:class:`~rca_lightning.utils.settings_check.SettingsCheck` makes an error; it is followed to the exception
Hydra was handling.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import TextIO

from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    InstantiationException,
    OverrideParseException,
)
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, ValidationError

from rca_lightning.utils.errors import UserError

FULL_ERROR_VARIABLE = "HYDRA_FULL_ERROR"
USER_ERROR_STATUS = 2
HYDRA_JOB_ERROR_LINE = "Error executing job with overrides"
# The warning Hydra 1.3 gives instead of a callback's exception (hydra/_internal/callbacks.py).
HYDRA_CALLBACK_WARNING = re.compile(r"Callback \w+\.\w+ raised ")
# Settings errors Hydra or OmegaConf raise while composing or resolving the configuration.
SETTINGS_ERRORS = (
    CompactHydraException,
    ConfigCompositionException,
    OverrideParseException,
    InterpolationResolutionError,
    MissingMandatoryValue,
    ValidationError,
)


def _cause_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from (``__cause__``), outermost first; a Hydra callback's
    warning raised as an error leads to the callback's exception (module docstring)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (current.__context__ if _is_callback_warning(current) else None)
    return chain


def _is_callback_warning(error: BaseException) -> bool:
    return isinstance(error, UserWarning) and HYDRA_CALLBACK_WARNING.match(str(error)) is not None


def user_error_in(error: BaseException) -> BaseException | None:
    """The user error behind ``error``: the first :class:`UserError` of its cause chain (explicit causes
    only), else a settings error of Hydra / OmegaConf in the chain (Hydra wraps a constructor's UserError in
    its own InstantiationException, which is itself a Hydra error: the UserError says what was wrong)."""
    chain = _cause_chain(error)
    return next((e for e in chain if isinstance(e, UserError)), None) or next(
        (e for e in chain if isinstance(e, SETTINGS_ERRORS)), None
    )


def _instantiated_key(error: BaseException) -> str:
    """The config key of the object whose constructor raised ``error`` (Hydra's ``full_key:``), or ""."""
    for outer in _cause_chain(error):
        if isinstance(outer, InstantiationException):
            match = re.search(r"^\s*full_key:\s*(\S+)", str(outer), re.MULTILINE)
            if match:
                return match.group(1)
    return ""


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line.

    A DataLoader worker's error arrives re-raised with the worker's traceback in its message; the line that
    counts is then the last one (``module.Type: message``), without the type. OmegaConf appends
    ``full_key:`` / ``object_type=`` lines; the first line carries the message and the key is kept.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "Original Traceback" in str(error):
        return lines[-1].split(": ", 1)[-1]
    message = lines[0]
    key = next((line.split(":", 1)[1].strip() for line in lines[1:] if line.startswith("full_key:")), "")
    if key and key not in message:
        message = f"{key}: {message}"
    options = _listed_options(lines)
    if options:
        message = f"{message} (available: {', '.join(options)})"
    cause = error.__cause__
    if isinstance(error, ConfigCompositionException) and cause is not None and str(cause).strip():
        message = f"{message} {str(cause).strip().splitlines()[0]}"
    return message


def _listed_options(lines: list[str]) -> list[str]:
    """The choices Hydra lists under "Available options in 'group':" when a config group has no such entry."""
    start = next((i for i, line in enumerate(lines) if line.startswith("Available options")), None)
    if start is None:
        return []
    options = []
    for line in lines[start + 1 :]:
        if line.startswith("Config search path") or line.endswith(":"):
            break
        options.append(line)
    return options


def _with_key(message: str, key: str) -> str:
    """``message`` with the dotted ``key`` of the object being built in front of the argument it names.

    Constructors name their argument (``head: expected one of ...``); Hydra knows the node (``model.net``).
    """
    if not key or message.startswith(f"{key}.") or re.match(r"[A-Za-z_][\w]*\.[\w.]*[:=]", message):
        return message  # the message already names its setting by its dotted key
    argument = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?=[:=])", message)
    if argument is None:
        return f"{key}: {message}"
    return f"{key}.{message}"


class _HoldJobErrorLine:
    """Stands in for stderr: holds Hydra's "Error executing job with overrides" line until the error is known.

    Hydra writes that line straight to ``sys.stderr`` before it re-raises a job's exception; for a user error
    it is a second line, for a bug it is useful context (written back before the traceback).
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.held = ""

    def write(self, text: str) -> int:
        if text.startswith(HYDRA_JOB_ERROR_LINE):
            self.held += text
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


def run_console_script(hydra_main: Callable[[], object], script: str) -> None:
    """Run a ``@hydra.main`` function as the console script ``script``: a user error is one line, exit 2."""
    if os.environ.get(FULL_ERROR_VARIABLE) == "1":
        hydra_main()
        return
    os.environ[FULL_ERROR_VARIABLE] = "1"  # Hydra re-raises instead of printing; decided below
    stderr = _HoldJobErrorLine(sys.stderr)
    sys.stderr = stderr
    try:
        hydra_main()
    except Exception as error:  # noqa: BLE001 - every exception ends the script here, each its own way
        sys.stderr = stderr.stream
        user_error = user_error_in(error)
        if user_error is None:
            sys.stderr.write(stderr.held)
            traceback.print_exc()
            sys.exit(1)
        message = _with_key(one_line(user_error), _instantiated_key(error))
        # One write of the whole line: the ranks of a launch share stderr, their lines must not interleave.
        sys.stderr.write(f"{script}: error: {message}\n")
        sys.stderr.flush()
        sys.exit(USER_ERROR_STATUS)
    finally:
        sys.stderr = stderr.stream
        os.environ.pop(FULL_ERROR_VARIABLE, None)


__all__ = ["run_console_script", "user_error_in", "one_line"]

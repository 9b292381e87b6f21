"""The documentation: the site builds strictly, every command line it shows composes, its example runs.

The command lines are those of README.md and docs/**/*.md: each line of a shell code block (```bash, ```sh,
```shell, ```console or no language) that runs a console script of the package, and each inline code span
that starts with ``rca-`` or ``make run``. A launcher in front (``torchrun ... $(which rca-train)``,
``srun``, ``$ ``) is dropped, ``make run ARGS="..."`` is ``rca-pipeline ...``, backslash-continued lines are
joined and trailing comments stripped. A placeholder (``<pseudo masks folder>``, ``$SLURM_JOB_ID``) becomes
the relative path ``stand-in`` (resolved in the test's own folder), or the first option of its config group
when it stands for a choice (``model=<name>``).

Each command is checked the way its script starts, short of running anything:

* a Hydra script: its config composed with the overrides and their values checked against the settings'
  types (:func:`~rca_lightning.utils.settings_check.check_overrides`, what every job does first);
* ``rca-pipeline``: that, then what it checks before its first stage
  (:meth:`~rca_lightning.pipeline.Pipeline.plan`): among others, every stage's config composed
  with its ``stages.<stage>.overrides`` and their values checked;
* ``rca-prepare-voc`` (argparse): its arguments parse.

A multirun (``-m``) is checked as its first job: each sweep at its first value.

The site is built as ``make docs`` builds it, and the example of docs/own-lightning-project.md is run.
"""

import importlib.metadata
import importlib.util
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from rca_lightning.cli import prepare_voc
from rca_lightning.pipeline import Pipeline
from rca_lightning.utils.resolvers import register_resolvers
from rca_lightning.utils.settings_check import check_overrides
from tests.conftest import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*```\s*([\w-]*)")
INLINE_COMMAND = re.compile(r"`((?:rca-|make run)[^`]*)`")
WHICH = re.compile(r"\$\(which (rca-[\w-]+)\)")
# A placeholder of the docs (<cams folder>) or a shell variable ($SLURM_JOB_ID, ${NODE_RANK}).
PLACEHOLDER = re.compile(r"<[^<>]+>|\$\{?[A-Z][A-Z0-9_]*\}?")
STAND_IN = "stand-in"
# What rca-prepare-voc is given as its root here: a folder that does not exist.
MISSING_ROOT = "no-such-folder"
MULTIRUN_FLAGS = {"-m", "--multirun"}
HYDRA_FLAGS = {*MULTIRUN_FLAGS, "--help"}
# The smallest number of distinct commands the docs show (they showed 100 when this test was written).
MIN_COMMANDS = 60


def console_scripts() -> dict[str, str | None]:
    """Each console script of the package (pyproject.toml's [project.scripts], as installed) and the config
    its ``hydra_console_script`` composes; None for a script that is not a Hydra app."""
    scripts = {}
    for entry in importlib.metadata.entry_points(group="console_scripts"):
        if entry.module.startswith("rca_lightning."):
            source = Path(importlib.util.find_spec(entry.module).origin).read_text(encoding="utf-8")
            config_name = re.search(r"hydra_console_script\(\s*\"[\w-]+\",\s*\"(\w+)\"", source)
            scripts[entry.name] = config_name.group(1) if config_name else None
    return scripts


SCRIPTS = console_scripts()


class DocCommand(NamedTuple):
    """A command line of the docs: the script, its arguments (placeholders replaced), where it is shown."""

    script: str
    arguments: tuple[str, ...]
    places: list[str]

    def __str__(self) -> str:
        return shlex.join([self.script, *self.arguments])


def shell_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of ``path``'s shell code blocks (a backslash-continued line joined
    to the next, numbered by its first) and of each inline code span that starts a command."""
    language = None  # None outside a code block
    joined, start = "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line)
        if fence:
            language = fence.group(1) if language is None else None
        elif language is None:
            yield from ((number, span) for span in INLINE_COMMAND.findall(line))
        elif language in SHELL_LANGUAGES:
            start = start or number
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
            else:
                yield start, joined + line
                joined, start = "", 0


def command_in(text: str) -> tuple[str, tuple[str, ...]] | None:
    """The console script a shell line runs and its arguments, placeholders replaced by :data:`STAND_IN`;
    None when it runs none."""
    words = shlex.split(PLACEHOLDER.sub(STAND_IN, WHICH.sub(r"\1", text)), comments=True)
    if words[:2] == ["make", "run"]:  # the Makefile runs `rca-pipeline $(ARGS)`
        arguments = [a for word in words[2:] if word.startswith("ARGS=") for a in shlex.split(word[5:])]
        return "rca-pipeline", tuple(arguments)
    for index, word in enumerate(words):
        if word in SCRIPTS:  # after the launcher, if any
            return word, tuple(words[index + 1 :])
    return None


def doc_commands() -> list[DocCommand]:
    """Every distinct command of the docs, with each place it is shown at, in the order of the docs."""
    commands: dict[tuple[str, tuple[str, ...]], DocCommand] = {}
    for path in DOC_FILES:
        for number, text in shell_lines(path):
            command = command_in(text)
            if command is not None:
                place = f"{path.relative_to(ROOT)}:{number}"
                commands.setdefault(command, DocCommand(*command, [])).places.append(place)
    return list(commands.values())


DOC_COMMANDS = doc_commands()


def first_option(group: str) -> str:
    """The first config of the config group ``group``, by name."""
    return min(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def first_job_overrides(arguments: tuple[str, ...]) -> list[str]:
    """The overrides of a Hydra script's ``arguments`` as its (first) job composes them: Hydra's flags
    dropped, each sweep of a multirun at its first value, a stand-in choice of a config group its first
    option."""
    multirun = not MULTIRUN_FLAGS.isdisjoint(arguments)
    overrides = []
    for override in OverridesParser.create().parse_overrides([a for a in arguments if a not in HYDRA_FLAGS]):
        key = override.get_key_element()
        if multirun and override.is_sweep_override():
            overrides.append(f"{key}={next(override.sweep_string_iterator())}")
        elif override.value() == STAND_IN and (CONFIG_DIR / override.key_or_group).is_dir():
            overrides.append(f"{key}={first_option(override.key_or_group)}")
        else:
            overrides.append(override.input_line)
    return overrides


def check_pipeline(overrides: list[str], run_dir: Path) -> None:
    """What ``rca-pipeline`` does before its first stage (as ``run_pipeline`` does it), nothing run."""
    # train_dir=<rca-train run> must be a finished run: the pipeline looks for its metrics.json.
    Path(STAND_IN).mkdir(exist_ok=True)
    (Path(STAND_IN) / "metrics.json").write_text("{}")
    cfg = compose("pipeline", overrides=overrides, return_hydra_config=True)
    check_overrides("pipeline", overrides, composed=cfg)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    Pipeline(cfg, overrides, choices, run_dir).plan()


def check_command(command: DocCommand, run_dir: Path) -> None:
    """Raise when ``command`` would stop before it runs (the module docstring says how each is checked)."""
    config_name = SCRIPTS[command.script]
    if config_name is None:
        # The root (first argument) is replaced by a folder that does not exist: the script stops right
        # after parsing its arguments, reading and writing nothing. argparse exits on a bad argument.
        status = prepare_voc.main([MISSING_ROOT, *command.arguments[1:]])
        assert status == prepare_voc.USER_ERROR_STATUS
        return
    overrides = first_job_overrides(command.arguments)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        if command.script == "rca-pipeline":
            check_pipeline(overrides, run_dir)
        else:
            check_overrides(config_name, overrides)


def test_docs_show_every_console_script():
    """The extraction finds the docs' commands, of every console script, and knows each Hydra script's
    config."""
    assert len(DOC_COMMANDS) >= MIN_COMMANDS, [str(command) for command in DOC_COMMANDS]
    assert {command.script for command in DOC_COMMANDS} == set(SCRIPTS)
    assert {name for name in SCRIPTS.values() if name} <= {path.stem for path in CONFIG_DIR.glob("*.yaml")}


def test_extraction_reads_every_form(tmp_path):
    """Inline spans, launchers, ``make run``, prompts, comments, continued lines and placeholders; a line
    that runs no console script, and a text block, give no command."""
    page = tmp_path / "page.md"
    page.write_text(
        'Run `rca-eval cams_dir=<cams folder>` or `make run ARGS="model=cam seed=1"`.\n'
        "```bash\n"
        "torchrun --nproc_per_node=2 $(which rca-train) trainer=ddp  # two processes\n"
        "srun rca-pipeline hydra.run.dir=runs/$SLURM_JOB_ID \\\n"
        "  seed=1\n"
        "$ rca-seg pseudo_masks_dir=/path/to/masks\n"
        "pip install -e .\n"
        "```\n"
        "```text\nrca-train: error: ...\n```\n"
    )
    assert [(number, command_in(text)) for number, text in shell_lines(page)] == [
        (1, ("rca-eval", ("cams_dir=stand-in",))),
        (1, ("rca-pipeline", ("model=cam", "seed=1"))),
        (3, ("rca-train", ("trainer=ddp",))),
        (4, ("rca-pipeline", ("hydra.run.dir=runs/stand-in", "seed=1"))),
        (6, ("rca-seg", ("pseudo_masks_dir=/path/to/masks",))),
        (7, None),
    ]
    multirun = ("-m", "seed=0,1,2", "model=stand-in")
    assert first_job_overrides(multirun) == ["seed=0", f"model={first_option('model')}"]


@pytest.mark.parametrize(
    "command", DOC_COMMANDS, ids=[f"{command.places[0]} {command}" for command in DOC_COMMANDS]
)
def test_doc_command_composes(command, tmp_path, monkeypatch, capsys):
    """The command, as the docs show it, composes and passes its script's checks of the settings."""
    register_resolvers()
    monkeypatch.chdir(tmp_path)  # the relative stand-in paths land here
    try:
        check_command(command, tmp_path / "run")
    except (Exception, SystemExit) as error:  # argparse exits on a bad argument
        pytest.fail(
            f"{', '.join(command.places)}: `{command}` does not compose: {type(error).__name__}: {error}\n"
            f"{capsys.readouterr().err[-2000:]}"
        )


def test_site_builds_strictly(tmp_path):
    """``make docs``: the site builds with ``--strict`` (a broken link, snippet or API reference fails)."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    assert mkdocs.is_file(), (
        f"{mkdocs} not found: `make install` installs the docs extra (mkdocs, mkdocs-material, mkdocstrings)"
    )
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()


@pytest.mark.slow
def test_own_dataset_example_runs(tmp_path):
    """docs/examples/own_dataset.py trains RCALitModule for an epoch and prints what it did (it writes no
    file: no logger, no checkpoint)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "own_dataset.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = re.search(
        r"^RCALitModule: (\d+) steps on \d+ tagged images of \d+ classes, epoch train/loss (\S+)$",
        result.stdout,
        re.MULTILINE,
    )
    assert summary, result.stdout[-4000:]
    assert int(summary.group(1)) > 0
    assert math.isfinite(float(summary.group(2)))

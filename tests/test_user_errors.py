"""User errors end a console script in one line on stderr and exit status 2, before any work is done.

Most runs call the installed entry point inside the test's process (:func:`tests.console_runs.run_in_process`,
about a second each). One case per script (``REAL_PROCESS_CASES``: rca-cams, rca-seg, rca-pseudo, rca-train,
rca-pipeline) runs the installed console script as a subprocess, as a user would: only a real process shows
the script file itself at work and the stderr of the process as a whole, with whatever its imports, Hydra or
C code write to the file descriptor, and not only what goes through ``sys.stderr``. Each costs a process
start (~5-10 s here), so there are five. The messages' own wording is tested where each error is raised.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from torch._utils import ExceptionWrapper

from rca_lightning.pipeline import Pipeline
from rca_lightning.utils.error_messages import one_line, user_error_in, with_key
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput, UserError
from rca_lightning.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR
from tests.console_runs import OFFLINE, ScriptResult, run_in_process

SECONDS_TO_FAIL = 60
# What a finished step leaves in a run folder; none of it may exist after a user error.
STEP_OUTPUTS = {"metrics.json", "cams.json", "pseudo.json", "eval.json", "settings.json", "report.json"}
# Hydra writes this line to stderr itself when a job raises (hydra.core.utils.JobReturn.return_value),
# before the console script sees the exception; see test_hydra_job_line_is_not_printed.
HYDRA_JOB_LINE = "Error executing job with overrides:"


def script_arguments(overrides: list[str], run_dir: Path) -> list[str]:
    return [*overrides, f"paths.cache_dir={run_dir.parent / 'cache'}", f"hydra.run.dir={run_dir}"]


def run_script(script: str, overrides: list[str], run_dir: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run an installed console script as a subprocess; returns (completed process, seconds it took)."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env.update(OFFLINE)  # as run_in_process runs it
    command = [str(Path(sys.executable).with_name(script)), *script_arguments(overrides, run_dir)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    return result, time.perf_counter() - started


def run_inside(
    script: str, overrides: list[str], run_dir: Path, full_error: bool = False
) -> tuple[ScriptResult, float]:
    """Run an installed console script's entry point in this process; returns (result, seconds it took)."""
    environment = {"HYDRA_FULL_ERROR": "1"} if full_error else {}
    started = time.perf_counter()
    result = run_in_process(script, *script_arguments(overrides, run_dir), environment=environment)
    return result, time.perf_counter() - started


# (id, script, overrides given the test's folder, what the line must name)
CASES: list[tuple[str, str, Callable[[Path], list[str]], Callable[[Path], list[str]]]] = [
    (
        "missing_train_dir",
        "rca-cams",
        lambda d: [f"train_dir={d / 'nope'}"],
        lambda d: [f"train_dir={d / 'nope'} not found: expected a folder written by rca-train"],
    ),
    (
        "missing_ckpt_path",
        "rca-cams",
        lambda d: [f"ckpt_path={d / 'nope.ckpt'}"],
        lambda d: [f"ckpt_path={d / 'nope.ckpt'} not found: expected a checkpoint file"],
    ),
    (
        "run_folder_without_metrics",
        "rca-cams",
        lambda d: [f"train_dir={d / 'unfinished_run'}"],
        lambda d: [f"{d / 'unfinished_run' / 'metrics.json'} not found", "finished rca-train run"],
    ),
    (
        "empty_pseudo_masks_dir",
        "rca-seg",
        lambda d: [f"pseudo_masks_dir={d / 'empty'}"],
        lambda d: [f"pseudo_masks_dir={d / 'empty'} holds no .png file"],
    ),
    (
        "attention_seeds_without_accumulation",
        "rca-pseudo",
        lambda d: ["seeds=attention", f"attention_dir={d / 'empty'}"],
        lambda d: [f"attention_dir={d / 'empty'} holds no index.json"],
    ),
    (
        "unknown_checkpoint_choice",
        "rca-train",
        lambda d: ["checkpoint=best"],
        lambda d: [
            "checkpoint='best': expected one of ['last', 'best_map', 'best_cam_miou', 'best_val_miou']"
        ],
    ),
    (
        "stage_entry_not_a_list",
        "rca-pipeline",
        lambda d: ["stages.cams.overrides=scales"],
        lambda d: ["stages.cams.overrides: expected a list", "got 'scales'"],
    ),
]


# The case of each script that runs the installed script as a real process (module docstring).
REAL_PROCESS_CASES = {
    "missing_train_dir",  # rca-cams
    "empty_pseudo_masks_dir",  # rca-seg
    "attention_seeds_without_accumulation",  # rca-pseudo
    "unknown_checkpoint_choice",  # rca-train
    "stage_entry_not_a_list",  # rca-pipeline
}


def test_each_script_has_one_case_run_as_a_real_process():
    real = [script for case_id, script, *_ in CASES if case_id in REAL_PROCESS_CASES]
    assert sorted(real) == sorted({script for _, script, *_ in CASES})


@pytest.fixture(scope="module")
def user_error_runs(tmp_path_factory) -> Callable[[str], tuple]:
    """Runs a case once per module (the case's result, its seconds, its folder and the expected parts): in a
    subprocess for ``REAL_PROCESS_CASES``, in this process for the others."""
    base = tmp_path_factory.mktemp("user_errors")
    (base / "unfinished_run" / "checkpoints").mkdir(parents=True)
    (base / "empty").mkdir()
    cases = {case[0]: case[1:] for case in CASES}
    done: dict[str, tuple] = {}

    def run(case_id: str) -> tuple:
        if case_id not in done:
            script, overrides, expected = cases[case_id]
            run_dir = base / "runs" / case_id
            runner = run_script if case_id in REAL_PROCESS_CASES else run_inside
            result, seconds = runner(script, overrides(base), run_dir)
            done[case_id] = (script, result, seconds, run_dir, expected(base))
        return done[case_id]

    return run


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "case_id",
    [
        pytest.param(case[0], marks=[pytest.mark.slow] if case[0] in REAL_PROCESS_CASES else [])
        for case in CASES
    ],
)
def test_user_error_is_one_line_and_exit_status_2(user_error_runs, case_id):
    script, result, seconds, run_dir, expected = user_error_runs(case_id)
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{script}: error: ")
    for part in expected:
        assert part in lines[0]
    assert "Traceback" not in result.stderr
    assert seconds < SECONDS_TO_FAIL
    written = {path.name for path in run_dir.rglob("*")}
    assert not written & STEP_OUTPUTS and not any(name.endswith(".ckpt") for name in written), written


@pytest.mark.slow
def test_hydra_job_line_is_not_printed(user_error_runs):
    """In the stderr of the real rca-cams process (Hydra writes the line itself)."""
    _, result, *_ = user_error_runs("missing_train_dir")
    assert HYDRA_JOB_LINE not in result.stderr


def test_a_model_setting_is_named_by_its_dotted_key(tmp_path):
    result, _ = run_inside("rca-train", ["model.net.head=bogus"], tmp_path / "run")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1
    assert (
        lines[0] == "rca-train: error: model.net.head: expected one of ['per_class', 'shared'], got 'bogus'"
    )


def test_hydra_full_error_shows_the_traceback(tmp_path):
    result, _ = run_inside("rca-cams", [f"train_dir={tmp_path / 'nope'}"], tmp_path / "run", full_error=True)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "MissingInput" in result.stderr


# ------------------------------------------------------------------------------------ console helpers
def wrapped_by_instantiate(error: Exception) -> InstantiationException:
    """What ``hydra.utils.instantiate`` raises when a target's constructor raises ``error``."""
    try:
        try:
            raise error
        except Exception as cause:
            raise InstantiationException(
                f"Error in call to target 'rca_lightning.models.rca_net.RCANet':\n{cause!r}\n"
                "full_key: model.net"
            ) from cause
    except InstantiationException as raised:
        return raised


def test_user_error_wrapped_by_instantiate_is_found():
    user_error = InvalidSetting("head: expected one of ['per_class', 'shared'], got 'bogus'")
    assert user_error_in(wrapped_by_instantiate(user_error)) is user_error


def test_a_constructors_own_error_keeps_its_cause_on_the_line():
    """A class named in the config failing in its constructor (a NameError in a user's module): the line says
    what failed, not only where."""
    wrapped = wrapped_by_instantiate(NameError("name 'os' is not defined"))
    assert one_line(user_error_in(wrapped)) == (
        "model.net: Error in call to target 'rca_lightning.models.rca_net.RCANet': "
        "NameError: name 'os' is not defined"
    )


def test_user_error_in_follows_the_cause_chain():
    missing = MissingInput("train_dir=/x not found: expected a folder written by rca-train")
    try:
        try:
            raise missing
        except MissingInput as cause:
            raise RuntimeError("while building the run") from cause
    except RuntimeError as error:
        assert user_error_in(error) is missing
    assert user_error_in(RuntimeError("a bug")) is None
    assert user_error_in(ValueError("a bug")) is None


def test_user_errors_keep_their_builtin_bases():
    assert issubclass(InvalidSetting, ValueError) and issubclass(InvalidData, ValueError)
    assert issubclass(MissingInput, FileNotFoundError)
    assert all(issubclass(kind, UserError) for kind in (InvalidSetting, InvalidData, MissingInput))


def test_one_line_of_a_dataloader_worker_error():
    message = (
        "Caught InvalidData in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "worker.py", line 1, in _worker_loop\n    data = fetcher.fetch(index)\n'
        "rca_lightning.utils.errors.InvalidData: bad mask x"
    )
    assert one_line(InvalidData(message)) == "bad mask x"
    # The same through torch's own wrapper, as a worker re-raises it in the main process.
    try:
        raise InvalidData("/data/a.png: value 7, expected class indices 0..3 or 255")
    except InvalidData:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(InvalidData) as caught:
        wrapper.reraise()
    assert one_line(caught.value) == "/data/a.png: value 7, expected class indices 0..3 or 255"


def test_one_line_of_a_plain_message():
    assert one_line(MissingInput("ckpt_path=/x.ckpt not found: expected a checkpoint")) == (
        "ckpt_path=/x.ckpt not found: expected a checkpoint"
    )


# -------------------------------------------------------------------------- rca-pipeline's early checks
def pipeline_for(run_dir: Path, overrides: list[str]) -> Pipeline:
    """A pipeline as ``rca-pipeline <overrides>`` builds it (inside an initialised Hydra, which its stages
    compose with)."""
    cfg = compose("pipeline", overrides=overrides, return_hydra_config=True)
    return Pipeline(cfg, overrides, dict(cfg.hydra.runtime.choices), run_dir)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+stages.bogus=[]"], r"stages.bogus: unknown stage; expected one of \['classifier', 'cams', "),
        (
            ["stages.cams.overrides=scales"],
            r"stages.cams.overrides: expected a list of overrides .*, got 'scales'",
        ),
        (["seeds=sum"], r"seeds='sum': expected one of \['auto', 'cams', 'attention', 'max'\]"),
        (["seeds=attention"], r"seeds=attention: the classifier would leave no attention accumulation"),
        (
            ['stages.segmentation.overrides=["trainer.no_such_setting=1"]'],
            r"stages.segmentation: .*no_such_setting",
        ),
    ],
)
def test_pipeline_settings_are_checked_before_any_stage(tmp_path, overrides, message):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        pipeline = pipeline_for(tmp_path / "run", overrides)
        with pytest.raises(InvalidSetting, match=message) as caught:
            pipeline.run()
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_pipeline_train_dir_must_be_a_finished_run(tmp_path):
    register_resolvers()
    (tmp_path / "classifier").mkdir()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        pipeline = pipeline_for(tmp_path / "run", [f"train_dir={tmp_path / 'classifier'}"])
        with pytest.raises(
            MissingInput, match=f"train_dir={tmp_path / 'classifier'}: .*metrics.json not found"
        ):
            pipeline.run()


def test_the_instantiated_key_is_put_in_front_of_the_argument_once():
    assert (
        with_key("head: expected one of ['a'], got 'b'", "model.net")
        == "model.net.head: expected one of ['a'], got 'b'"
    )
    assert with_key("data.validate='x': expected full", "data") == "data.validate='x': expected full"
    assert with_key("no argument named here", "model.net") == "model.net: no argument named here"
    assert with_key("head: expected", "") == "head: expected"

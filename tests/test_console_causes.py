"""The console maps to a user error only what was raised as one (``raise ... from error``): a bug raised
while a user error is being handled stays a bug, a traceback and exit status 1. A Hydra app of the test's
own checks the ways a user error leaves Hydra: from a job, a callback, composition, a sweep."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rca_lightning.cli.console import run_console_script
from rca_lightning.utils.error_messages import user_error_in
from rca_lightning.utils.errors import InvalidData, MissingInput


def bug_while_handling_a_user_error() -> None:
    try:
        raise MissingInput("/data/a.png not found: expected an image")
    except MissingInput:
        raise TypeError("a bug in the handler")  # noqa: B904 - on purpose: a new failure, not the user error


def user_error_raised_from_another() -> None:
    try:
        int("seven")
    except ValueError as error:
        raise InvalidData("/data/split.txt: line 3 'seven', expected an image count") from error


def run_as_script(function, capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``function`` run as the console script ``rca-test``."""
    with pytest.raises(SystemExit) as exited:
        run_console_script(function, "rca-test")
    return exited.value.code, capsys.readouterr().err


def test_a_bug_raised_while_a_user_error_is_handled_is_a_traceback(capsys):
    status, stderr = run_as_script(bug_while_handling_a_user_error, capsys)
    assert status == 1
    assert "Traceback" in stderr and "TypeError: a bug in the handler" in stderr
    assert "rca-test: error:" not in stderr


def test_a_user_error_raised_from_another_exception_is_one_line(capsys):
    status, stderr = run_as_script(user_error_raised_from_another, capsys)
    assert status == 2
    assert stderr.strip().splitlines() == [
        "rca-test: error: /data/split.txt: line 3 'seven', expected an image count"
    ]


class RefusesItsSetting:
    """A constructor that refuses its argument, as the project's classes do."""

    def __init__(self, head: str) -> None:
        raise InvalidData(f"head: expected 'shared', got {head!r}")


def test_a_constructors_user_error_through_instantiate_is_still_found():
    config = OmegaConf.create({"_target_": f"{__name__}.RefusesItsSetting", "head": "bogus"})
    with pytest.raises(InstantiationException) as caught:  # Hydra's, raised from the constructor's error
        instantiate(config)
    assert isinstance(user_error_in(caught.value), InvalidData)


# A Hydra app of the test's own: its task function and a callback of its own refuse what ``where`` says.
APP = """
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

from rca_lightning.cli.console import exits_on_user_error, run_console_script
from rca_lightning.utils.errors import InvalidSetting, UserErrorExit


class Refuses(Callback):
    def on_job_start(self, config, **kwargs):
        if config.where == "callback":
            error = InvalidSetting("where=callback: refused by the callback")
            raise UserErrorExit(error) from error


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
@exits_on_user_error
def app(cfg):
    if cfg.where == "job":
        raise InvalidSetting("where=job: refused by the job")
    if cfg.where == "bug":
        raise KeyError("a bug")
    print("ran", cfg.where, HydraConfig.get().job.name)


if __name__ == "__main__":
    run_console_script(app, "rca-app")
"""
APP_CONFIG = "where: none\nhydra:\n  callbacks:\n    refuses:\n      _target_: __main__.Refuses\n"


@pytest.fixture
def run_app(tmp_path):
    """``run_app(*arguments, full_error=False)``: the app run as a script; (exit status, stdout, stderr).

    A subprocess: a fresh interpreter runs ``app.py`` as ``__main__`` (its callback is
    ``__main__.Refuses``, its config found from the script's file); it is not an installed console script,
    the only kind :func:`tests.console_runs.run_in_process` runs."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.yaml").write_text(APP_CONFIG)

    def run(*arguments: str, full_error: bool = False) -> tuple[int, str, str]:
        env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
        env.update({"HYDRA_FULL_ERROR": "1"} if full_error else {})
        command = [sys.executable, "app.py", *arguments, f"hydra.run.dir={tmp_path / 'run'}"]
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        return result.returncode, result.stdout, result.stderr

    return run


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.slow
def test_user_errors_of_a_job_of_a_callback_and_of_composition_pass_hydra_as_one_line(run_app):
    # What the console relies on: Hydra lets a SystemExit raised by a job or a callback pass, it finds a
    # decorated task's module (so its config) through __wrapped__, and HYDRA_FULL_ERROR=1 hands its own
    # composition errors on.
    status, stdout, stderr = run_app()
    assert (status, stdout.strip()) == (0, "ran none app"), stderr[-2000:]
    for where in ("job", "callback"):
        status, _, stderr = run_app(f"where={where}")
        expected = [f"rca-app: error: where={where}: refused by the {where}"]
        assert (status, error_lines(stderr)) == (2, expected), stderr[-2000:]
    status, _, stderr = run_app("wher=job")
    assert status == 2 and error_lines(stderr) == [
        "rca-app: error: Could not override 'wher'. Key 'wher' is not in struct"
    ], stderr[-2000:]


@pytest.mark.slow
def test_a_bug_is_hydras_failed_job_with_its_traceback_and_full_error_shows_user_errors_too(run_app):
    status, _, stderr = run_app("where=bug")
    assert status == 1 and "Error executing job with overrides: ['where=bug']" in stderr
    assert "Traceback" in stderr and "KeyError: 'a bug'" in stderr
    status, _, stderr = run_app("where=job", full_error=True)
    assert status == 1 and "Traceback" in stderr and "InvalidSetting: where=job: refused by the job" in stderr


@pytest.mark.slow
def test_a_sweeps_user_error_is_the_jobs_failure_and_the_other_jobs_run(run_app):
    status, stdout, stderr = run_app("-m", "where=job,none")
    assert status == 2 and "ran none" in stdout, stderr[-2000:]
    assert error_lines(stderr)[-1] == "rca-app: error: where=job: refused by the job"

"""The console maps to a user error only what was raised as one (``raise ... from error``): a bug raised
while a user error is being handled stays a bug, a traceback and exit status 1."""

from __future__ import annotations

import warnings

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rca_lightning.cli.console import run_console_script, user_error_in
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


def test_a_hydra_callbacks_user_error_turned_warning_is_still_found():
    # Hydra 1.3 turns a callback's exception into a warning; SettingsCheck makes that warning an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            try:
                raise InvalidData("data.root: expected a folder")
            except InvalidData as error:
                warnings.warn(
                    f"Callback SettingsCheck.on_job_start raised InvalidData: {error}", stacklevel=1
                )
        except UserWarning as raised:
            assert isinstance(user_error_in(raised), InvalidData)
    assert user_error_in(UserWarning("Callback SettingsCheck.on_job_start raised KeyError: x")) is None

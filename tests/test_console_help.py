"""Every console script's ``--help`` starts with what it does and at least three examples, then the groups.

Each script's installed entry point runs in the test's process (:func:`tests.console_runs.run_in_process`);
the real processes of the scripts are run in ``test_user_errors``."""

import pytest

from tests.console_runs import run_in_process

SCRIPTS = [
    "rca-train",
    "rca-cams",
    "rca-pseudo",
    "rca-eval",
    "rca-seg",
    "rca-pipeline",
    "rca-predict",
    "rca-export",
    "rca-boundary",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_starts_with_what_the_script_does_and_examples(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_in_process(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    header, groups = result.stdout.split("== Configuration groups ==", 1)
    lines = header.strip().splitlines()
    assert lines[0].startswith(f"{script}: "), lines[0]
    examples = [line for line in lines if line.strip().startswith(f"{script} ") or line.strip() == script]
    assert len(examples) >= 3, lines
    assert "== Config ==" in groups

"""Every console script's ``--help`` starts with what it does and at least three examples, then the groups."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
@pytest.mark.slow
def test_help_starts_with_what_the_script_does_and_examples(script, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [str(Path(sys.executable).with_name(script)), "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    header, groups = result.stdout.split("== Configuration groups ==", 1)
    lines = header.strip().splitlines()
    assert lines[0].startswith(f"{script}: "), lines[0]
    examples = [line for line in lines if line.strip().startswith(f"{script} ") or line.strip() == script]
    assert len(examples) >= 3, lines
    assert "== Config ==" in groups

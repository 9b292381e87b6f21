"""The tiny ``rca-pipeline`` of the end-to-end tests, and the one finished run they share.

:func:`tiny_pipeline_run` trains the run once per test session; tests read it as it is, and a test that
writes works in its own copy (:func:`copied_pipeline_run`). The shared run is checked unchanged when the
session ends, so a test that writes into it fails there, naming it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tiny_settings import TINY_DATA_OVERRIDES, TINY_MODEL_OVERRIDES

QUIET_STAGES = [
    'stages.cams.overrides=["scales=[1.0,1.5]"]',
    'stages.cam_eval.overrides=["progress=false"]',
    'stages.pseudo_masks.overrides=["progress=false","num_workers=2"]',
    'stages.pseudo_mask_eval.overrides=["progress=false"]',
]


def pipeline_command(
    run_dir: Path, cache: Path, *extra: str, epochs: int = 6, segmentation_epochs: int = 6
) -> list[str]:
    """The tiny ``rca-pipeline`` command of these tests, into ``run_dir``: the classifier and the
    segmentation network trained for ``epochs`` and ``segmentation_epochs`` (6 and 6: enough to learn the
    built-in classes; a test that only follows the stages through trains for fewer)."""
    segmentation = f'["trainer.max_epochs={segmentation_epochs}","trainer.enable_progress_bar=false"]'
    return [
        str(Path(sys.executable).with_name("rca-pipeline")),
        *TINY_DATA_OVERRIDES,
        *TINY_MODEL_OVERRIDES,
        "trainer=cpu",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        f"model.lr_milestone_epochs=[{epochs - 1}]",
        "model.contrast_start_epoch=1",
        *QUIET_STAGES,
        f"stages.segmentation.overrides={segmentation}",
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def pipeline_environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}


def run_pipeline(
    run_dir: Path,
    cache: Path,
    *extra: str,
    environment: dict[str, str] | None = None,
    epochs: int = 6,
    segmentation_epochs: int = 6,
) -> subprocess.CompletedProcess:
    """Run the tiny pipeline (:func:`pipeline_command`) into ``run_dir``, its dataset under ``cache``;
    fails the test unless it ends with status 0."""
    command = pipeline_command(run_dir, cache, *extra, epochs=epochs, segmentation_epochs=segmentation_epochs)
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environment or pipeline_environment(),
        timeout=900,
        cwd=run_dir.parent,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@dataclass(frozen=True)
class FinishedRun:
    """A finished tiny pipeline run: its folder, its dataset cache and what the command printed."""

    run_dir: Path
    cache: Path
    stdout: str
    stderr: str


# What a run may add to the shared dataset cache: the validation results of the datasets it reads.
DATASET_CACHE_RECORDS = ".validation"


def folder_digest(folder: Path) -> dict[str, str]:
    """Each file under ``folder`` (by relative path) -> the digest of its bytes; the dataset's validation
    records, which every run that reads the dataset may add to, left out."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and DATASET_CACHE_RECORDS not in path.relative_to(folder).parts
    }


@pytest.fixture(scope="session")
def tiny_pipeline_run(tmp_path_factory):
    """The tiny pipeline (:func:`pipeline_command`) run once for the session. Read-only."""
    base = tmp_path_factory.mktemp("shared_pipeline")
    run_dir, cache = base / "run", base / "cache"
    result = run_pipeline(run_dir, cache)
    before = folder_digest(base)
    yield FinishedRun(run_dir, cache, result.stdout, result.stderr)
    after = folder_digest(base)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a test wrote into the shared run {base} ({changed[:5]}): use copied_pipeline_run"


@pytest.fixture
def copied_pipeline_run(tiny_pipeline_run, tmp_path) -> FinishedRun:
    """A copy of the shared run for a test that writes (a run folder resumes wherever it lies); the dataset
    cache stays the shared one, read only."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_pipeline_run.run_dir, run_dir)
    return FinishedRun(run_dir, tiny_pipeline_run.cache, tiny_pipeline_run.stdout, tiny_pipeline_run.stderr)

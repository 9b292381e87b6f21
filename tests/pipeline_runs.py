"""The tiny ``rca-pipeline`` of the end-to-end tests, and the one finished run they share.

:func:`tiny_pipeline_run` trains the run once per test session (under pytest-xdist, once for all the
workers), in the background from the session's first test on; tests read it as it is, and a test that
writes works in its own copy (:func:`copied_pipeline_run`). The shared run is checked unchanged when the
session ends (in every worker), so a test that writes into it fails there, naming it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
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
# The segmentation recipe of the built-in dataset (seg_experiment=synthetic) fitted to these 64-pixel
# images: crops of 64 (its 128 scales every image up twice and trains on four times the pixels) and two
# evaluation scales with their mirror images (its four, up to 1.5, cost three times the pixels). The
# segmentation learns more so (about 27 mIoU against 21, all-background 12).
TINY_SEGMENTATION = ["crop_size=64", "seg_model.tta_scales=[0.75,1.0]"]


def pipeline_command(
    run_dir: Path, cache: Path, *extra: str, epochs: int = 6, segmentation_epochs: int = 6
) -> list[str]:
    """The tiny ``rca-pipeline`` command of these tests, into ``run_dir``: the classifier and the
    segmentation network trained for ``epochs`` and ``segmentation_epochs`` (6 and 6: enough to learn the
    built-in classes; a test that only follows the stages through trains for fewer), the segmentation at
    the images' size (:data:`TINY_SEGMENTATION`)."""
    settings = [f"trainer.max_epochs={segmentation_epochs}", "trainer.enable_progress_bar=false"]
    segmentation = "[" + ",".join(f'"{setting}"' for setting in [*settings, *TINY_SEGMENTATION]) + "]"
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


# The shared run's folder: in the session's temporary folder, or under pytest-xdist beside the workers' own
# (their common parent), for all of them.
SHARED_RUN = "shared_pipeline"
# Running processes of the shared run's build (held, so that none is reaped as garbage while it runs).
_BUILDS: list[subprocess.Popen] = []


def shared_run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / SHARED_RUN


def start_shared_run(base: Path) -> None:
    """Start the tiny pipeline into ``base`` in the background, unless a process of the session (an xdist
    worker) started it: the first to create ``base`` does. The build writes what it printed beside the
    run (``stdout``, ``stderr``) and, last, its exit status (``status``)."""
    try:
        base.mkdir(parents=True)
    except FileExistsError:
        return
    command = pipeline_command(base / "run", base / "cache")
    record = 'status=0; "$@" > stdout 2> stderr || status=$?; echo $status > status.tmp; mv status.tmp status'
    _BUILDS.append(
        subprocess.Popen(["sh", "-c", record, "sh", *command], cwd=base, env=pipeline_environment())
    )


def finished_shared_run(base: Path, timeout: float = 900) -> FinishedRun:
    """The shared run in ``base`` once its build ended (:func:`start_shared_run`); fails the test unless it
    ended with status 0."""
    status = base / "status"
    deadline = time.monotonic() + timeout
    while not status.is_file():
        assert time.monotonic() < deadline, f"the shared run in {base} did not finish in {timeout:.0f} s"
        time.sleep(0.5)
    stdout, stderr = (base / "stdout").read_text(), (base / "stderr").read_text()
    assert status.read_text().strip() == "0", stderr[-4000:]
    return FinishedRun(base / "run", base / "cache", stdout, stderr)


@pytest.fixture(scope="session", autouse=True)
def shared_run_started_early(request, tmp_path_factory):
    """At the session's first test, start building the shared run in the background if a test of the
    session reads it: it is built beside the tests that come before (no worker idles waiting for it)."""
    if any("tiny_pipeline_run" in item.fixturenames for item in request.session.items):
        start_shared_run(shared_run_folder(tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_pipeline_run(tmp_path_factory):
    """The tiny pipeline (:func:`pipeline_command`) run once for the session (for all xdist workers).
    Read-only."""
    base = shared_run_folder(tmp_path_factory)
    start_shared_run(base)  # a no-op where it was started at the session's first test
    finished = finished_shared_run(base)
    before = folder_digest(base)
    yield finished
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

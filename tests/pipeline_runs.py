"""The tiny ``rca-pipeline`` of the end-to-end tests, and the one finished run they share.

:func:`tiny_pipeline_run` trains the run once per test session (under pytest-xdist, once for all the
workers: the first builds it, the others wait for it); tests read it as it is, and a test that writes works
in its own copy (:func:`copied_pipeline_run`). The shared run is checked unchanged when the session ends (in
every worker), so a test that writes into it fails there, naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from tests.console_runs import OFFLINE, ScriptResult, run_in_process
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
    segmentation = json.dumps([*settings, *TINY_SEGMENTATION], separators=(",", ":"))
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
    return {**os.environ, **OFFLINE}


def run_pipeline(
    run_dir: Path,
    cache: Path,
    *extra: str,
    own_process: bool = False,
    environment: dict[str, str] | None = None,
    epochs: int = 6,
    segmentation_epochs: int = 6,
) -> ScriptResult | subprocess.CompletedProcess:
    """Run the tiny pipeline (:func:`pipeline_command`) into ``run_dir``, its dataset under ``cache``, from
    ``run_dir``'s parent: in this process (``tests/console_runs.py``: no second start of the stack), or, with
    ``own_process``, in a process of its own, in ``environment`` (default: :func:`pipeline_environment`).
    Fails the test unless it ends with status 0."""
    script, *arguments = pipeline_command(
        run_dir, cache, *extra, epochs=epochs, segmentation_epochs=segmentation_epochs
    )
    if own_process:
        result = subprocess.run(
            [script, *arguments],
            capture_output=True,
            text=True,
            env=environment or pipeline_environment(),
            timeout=900,
            cwd=run_dir.parent,
        )
    else:
        assert environment is None, "an environment of its own needs a process of its own"
        result = run_in_process(Path(script).name, *arguments, cwd=run_dir.parent)
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


def build_shared_run(base: Path) -> dict:
    """Run the tiny pipeline into ``base`` (``run/``, its dataset under ``cache/``); returns what it printed
    and the digest of the finished folder (:func:`folder_digest`)."""
    base.mkdir(parents=True, exist_ok=True)
    result = run_pipeline(base / "run", base / "cache")
    return {"stdout": result.stdout, "stderr": result.stderr, "digest": folder_digest(base)}


@pytest.fixture(scope="session")
def tiny_pipeline_run(tmp_path_factory):
    """The tiny pipeline (:func:`pipeline_command`) run once for the session. Read-only."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: the run is this session's own
        base = tmp_path_factory.mktemp("shared_pipeline")
        built = build_shared_run(base)
    else:
        # pytest-xdist: the workers' temporary folders share a parent. The first worker to take the lock
        # builds the run there; the others wait for it and reuse it. The record of the finished run (what
        # it printed and its digest) is written last, beside the run: the run is complete once it is there.
        root = tmp_path_factory.getbasetemp().parent
        base, record = root / "shared_pipeline", root / "shared_pipeline.json"
        with FileLock(root / "shared_pipeline.lock"):
            if not record.is_file():
                shutil.rmtree(base, ignore_errors=True)  # what a failed build of another worker left
                partial = record.with_suffix(".tmp")
                partial.write_text(json.dumps(build_shared_run(base)))
                partial.replace(record)
            built = json.loads(record.read_text())
    yield FinishedRun(base / "run", base / "cache", built["stdout"], built["stderr"])
    before, after = built["digest"], folder_digest(base)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a test wrote into the shared run {base} ({changed[:5]}): use copied_pipeline_run"


@pytest.fixture
def copied_pipeline_run(tiny_pipeline_run, tmp_path) -> FinishedRun:
    """A copy of the shared run for a test that writes (a run folder resumes wherever it lies); the dataset
    cache stays the shared one, read only."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_pipeline_run.run_dir, run_dir)
    return FinishedRun(run_dir, tiny_pipeline_run.cache, tiny_pipeline_run.stdout, tiny_pipeline_run.stderr)

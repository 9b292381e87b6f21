"""A real ``rca-pipeline`` killed with SIGKILL, then run again, ends as the shared run (never interrupted)
did, and leaves no temporary file behind: killed while it writes CAM files (after a classifier finished as
in the shared run), with the same CAMs, pseudo masks and scores; killed as the classifier writes its first
checkpoint (the later stages switched off: they start from the classifier's checkpoint, as in the first
case), with the same classifier, bit for bit."""

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from rca_lightning.pipeline import STAGE_NAMES
from tests.pipeline_runs import pipeline_command, pipeline_environment, run_pipeline

POLL_SECONDS = 0.005
# RERUN: the rerun is a process of its own, as a user's is: started seconds after the kill, its first write
# into a folder sweeps the killed writes' temporary files there (utils/atomic.py: those unchanged for 5 s).


def comparable(value: object, run_dir: Path) -> object:
    """``value`` (a stage's record) with ``run_dir`` written as ``<run>``: where the run lives."""
    if isinstance(value, dict):
        return {key: comparable(item, run_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [comparable(item, run_dir) for item in value]
    if isinstance(value, str):
        return value.replace(str(run_dir), "<run>")
    return value


def kill_when(
    run_dir: Path, cache: Path, condition: Callable[[], bool], *extra: str, timeout: float = 600
) -> None:
    """Start the pipeline (``extra``: more overrides) in ``run_dir``; SIGKILL its process group as soon as
    ``condition()``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        pipeline_command(run_dir, cache, *extra),
        env=pipeline_environment(),
        cwd=run_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            assert process.poll() is None, "the pipeline ended before the moment of the kill"
            assert time.monotonic() < deadline, "the moment of the kill never came"
            time.sleep(POLL_SECONDS)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def temporary_files(run_dir: Path) -> list[Path]:
    """Leftovers of atomic writes (``.<name>.atomic-<hex>.tmp``) and of any other ``.tmp`` write."""
    return [path for path in run_dir.rglob("*") if path.name.endswith(".tmp")]


def cam_files_half_written(run_dir: Path) -> Callable[[], bool]:
    maps = run_dir / "cams" / "maps"
    return lambda: maps.is_dir() and len(list(maps.glob("*.npz"))) >= 2


def first_checkpoint_written(run_dir: Path) -> Callable[[], bool]:
    checkpoints = run_dir / "classifier" / "checkpoints"
    return lambda: checkpoints.is_dir() and any(checkpoints.iterdir())


def cam_arrays(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Each CAM file's name -> its arrays (the files' bytes hold the zip entries' times)."""
    return {path.name: dict(np.load(path)) for path in sorted((run_dir / "cams" / "maps").glob("*.npz"))}


def mask_bytes(run_dir: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes() for path in sorted((run_dir / "pseudo_masks" / "masks").glob("*.png"))
    }


@pytest.mark.slow
def test_a_pipeline_killed_writing_cams_reruns_to_the_uninterrupted_cams_masks_and_scores(
    tiny_pipeline_run, tmp_path
):
    # The shared run is the uninterrupted one, on the same dataset (its cache). The segmentation network is
    # switched off: it trains from the masks compared here (its own resume: tests/test_seg_resume.py).
    shared, cache, run_dir = tiny_pipeline_run.run_dir, tiny_pipeline_run.cache, tmp_path / "run"
    shutil.copytree(shared / "classifier", run_dir / "classifier")  # finished as in the shared run
    no_segmentation = "stages.segmentation.enabled=false"
    kill_when(run_dir, cache, cam_files_half_written(run_dir), no_segmentation)
    assert not (run_dir / "report.json").exists()

    run_pipeline(run_dir, cache, no_segmentation, own_process=True)  # a user's rerun: see RERUN

    resumed, uninterrupted = cam_arrays(run_dir), cam_arrays(shared)
    assert resumed.keys() == uninterrupted.keys() and len(resumed) > 2
    for name, arrays in uninterrupted.items():
        assert arrays.keys() == resumed[name].keys(), name
        assert all(np.array_equal(array, resumed[name][key]) for key, array in arrays.items()), name
    assert mask_bytes(run_dir) == mask_bytes(shared)
    for scores in ("cam_eval/eval.json", "pseudo_mask_eval/eval.json"):
        expected = comparable(json.loads((shared / scores).read_text()), shared)
        assert comparable(json.loads((run_dir / scores).read_text()), run_dir) == expected, scores
    report, uninterrupted_report = (
        json.loads((folder / "report.json").read_text()) for folder in (run_dir, shared)
    )
    for key in ("cam_miou", "cam_threshold", "pseudo_label_miou", "pseudo_ignored_fraction"):
        assert report[key] == uninterrupted_report[key], key
    assert temporary_files(run_dir) == []


@pytest.mark.slow
def test_a_classifier_killed_writing_its_first_checkpoint_reruns_to_the_uninterrupted_one(
    tiny_pipeline_run, tmp_path
):
    cache, run_dir = tiny_pipeline_run.cache, tmp_path / "run"
    classifier_only = [f"stages.{name}.enabled=false" for name in STAGE_NAMES if name != "classifier"]
    kill_when(run_dir, cache, first_checkpoint_written(run_dir), *classifier_only)
    assert not (run_dir / "classifier" / "metrics.json").exists()

    run_pipeline(run_dir, cache, *classifier_only, own_process=True)  # see RERUN

    shared, resumed = tiny_pipeline_run.run_dir / "classifier", run_dir / "classifier"
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (shared, resumed)]
    assert comparable(metrics[1], run_dir) == comparable(metrics[0], tiny_pipeline_run.run_dir)
    weights = [
        torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        for folder in (shared, resumed)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0]), "other weights"
    assert temporary_files(run_dir) == []

"""A real ``rca-pipeline`` killed with SIGKILL (while it writes CAM files, after a classifier finished as in
the shared run, and as the classifier writes its first checkpoint), then run again, ends with the report of
the shared run, never interrupted, and leaves no temporary file behind."""

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.pipeline_runs import pipeline_command, pipeline_environment, run_pipeline

# Report fields that differ between any two runs: wall times, and where the run lives.
TIMING_KEYS = ("stage_seconds",)
POLL_SECONDS = 0.005


def comparable(value: object, run_dir: Path) -> object:
    """``value`` (a report or part of one) without timings, with ``run_dir`` written as ``<run>``."""
    if isinstance(value, dict):
        return {key: comparable(item, run_dir) for key, item in value.items() if key not in TIMING_KEYS}
    if isinstance(value, list):
        return [comparable(item, run_dir) for item in value]
    if isinstance(value, str):
        return value.replace(str(run_dir), "<run>")
    return value


def kill_when(run_dir: Path, cache: Path, condition: Callable[[], bool], timeout: float = 600) -> None:
    """Start the pipeline in ``run_dir`` and SIGKILL its whole process group as soon as ``condition()``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        pipeline_command(run_dir, cache),
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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("moment", "finished"),
    [(cam_files_half_written, ("classifier",)), (first_checkpoint_written, ())],
    ids=["writing_cams", "writing_checkpoint"],
)
def test_a_killed_pipeline_reruns_to_the_uninterrupted_report(tiny_pipeline_run, tmp_path, moment, finished):
    # The shared run is the uninterrupted one; the same dataset (its cache), so the same report is expected.
    report = json.loads((tiny_pipeline_run.run_dir / "report.json").read_text())
    cache = tiny_pipeline_run.cache
    run_dir = tmp_path / "run"
    for stage in finished:  # stages before the moment of the kill, finished as in the shared run
        shutil.copytree(tiny_pipeline_run.run_dir / stage, run_dir / stage)
    kill_when(run_dir, cache, moment(run_dir))
    assert not (run_dir / "report.json").exists()

    run_pipeline(run_dir, cache)

    resumed = json.loads((run_dir / "report.json").read_text())
    expected_dir = Path(report["folders"]["segmentation_checkpoint"]).parents[2]
    assert comparable(resumed, run_dir) == comparable(report, expected_dir)
    assert temporary_files(run_dir) == []

"""The benches stay working on a CPU: the GPU suite (``--smoke``) with the GPU throughput bench (every preset,
precision and memory format with tiny networks; ``torch.compile`` is left to GPU runs: compiling takes minutes
on a CPU) and the scale rehearsal (every stage of the built-in pipeline at a tiny size), and the cost of the
checks of issue 24 (``safety_overhead.py``)."""

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rca_lightning.data import VOCSegmentationDataset

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_throughput.py"
SUITE = BENCH.parent / "gpu_suite.sh"
PIPELINE_STAGES = ["classifier", "cams", "cam_eval", "pseudo_masks", "pseudo_mask_eval", "segmentation"]


@pytest.mark.slow
def test_gpu_suite_smoke_rehearses_every_stage_and_prints_one_table(tmp_path):
    """``gpu_suite.sh --smoke``: the throughput bench and the scale rehearsal on the CPU at tiny sizes, merged
    into one table. The throughput bench prints a row of positive images/s per preset, one per mode. Every
    stage of the built-in pipeline (and the data preparation) has a row of positive finite figures, its
    projection to the full dataset and schedule exceeds what the larger measured size cost; the report is a
    cost per run."""
    environment = {**os.environ, "OUT_DIR": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SUITE), "--smoke"], capture_output=True, text=True, timeout=900, env=environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # The throughput bench's table: the lines from its title up to the first that is not a table row.
    start = next(index for index, line in enumerate(lines) if line.startswith("training images/s on "))
    throughput = itertools.takewhile(lambda line: line.startswith("|"), lines[start + 1 :])
    rows = [line for line in throughput if line.startswith("| ") and "preset" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == [
        "faithful RCA (VGG-16)",
        "shared-head RCA (ResNet-101)",
        "plain CAM (VGG-16)",
        "DeepLab-v2 ResNet-101",
    ]
    for row in rows:
        values = [float(cell) for cell in re.findall(r"\| ([\d.]+)", row)]
        assert len(values) == 3 and all(value > 0 for value in values), row
    table = json.loads((tmp_path / "rehearsal_smoke.json").read_text())
    assert table["experiment"] == "synthetic" and table["device"]
    assert [row["name"] for row in table["stages"]] == ["data_preparation", *PIPELINE_STAGES, "report"]
    *per_item, report = table["stages"]
    for row in per_item:
        figures = [row[key] for key in ("seconds_per_item", "peak_rss_mib", "growth", "projected_seconds")]
        assert all(math.isfinite(value) and value > 0 for value in figures), row
        assert math.isfinite(row["disk_bytes_per_item"]) and row["disk_bytes_per_item"] >= 0, row
        assert row["projected_seconds"] > max(row["seconds"]), row
        assert row["projected_disk_bytes"] >= max(row["disk_bytes"]) > 0, row
        assert row["full_items"] > max(row["items"]), row
    for row in (per_item[1], per_item[-1]):  # the trainers: classifier, segmentation
        assert row["name"] in ("classifier", "segmentation") and row["seconds_per_epoch"] >= 0, row
        assert row["full_epochs"] > 0 and row["seconds_longer"] > 0, row
    assert report["items"] == [1, 1] and report["full_items"] == 1 and report["seconds_per_item"] == 0
    assert report["projected_seconds"] == max(report["seconds"]) > 0
    assert report["projected_disk_bytes"] == max(report["disk_bytes"]) > 0  # the figures
    merged = (tmp_path / "table.md").read_text().splitlines()
    assert merged[1] == "| measurement | setting | figure | peak GPU MiB | projected h |"
    assert merged == lines[-len(merged) :]
    assert sum(line.startswith("| training ") for line in merged) == 4 * 3  # 4 presets x 3 modes, eager
    assert sum(line.startswith("| synthetic ") for line in merged) == len(table["stages"])


@pytest.mark.slow
def test_safety_overhead_bench_adds_up_its_checks():
    """Every check has a row of a positive time, and the total is the sum of the rows' seconds."""
    command = [sys.executable, str(BENCH.parent / "safety_overhead.py"), "--repeats", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = [line.rsplit(maxsplit=3) for line in lines[1:-1]]
    assert len(rows) == 6 and all(float(ms) > 0 and int(count) > 0 for _, ms, count, _ in rows), lines
    total = float(lines[-1].split()[-1])
    assert total == pytest.approx(sum(float(seconds) for *_, seconds in rows), abs=0.004), lines


@pytest.mark.slow
def test_ap_bench_gives_one_map_on_a_split_with_every_class_and_a_higher_one_without_some(tiny_pipeline_run):
    """``ap_missing_classes.py`` on the shared run's classifier: on the val split, where every class is
    present, the two means agree; on the split without three classes the mean over every class is lower
    (three APs of 0) than the mean over the classes present."""
    command = [
        sys.executable,
        str(BENCH.parent / "ap_missing_classes.py"),
        "--train-dir",
        str(tiny_pipeline_run.run_dir / "classifier"),
        "--drop",
        "ring",
        "star",
        "cross",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| val")]
    (every, all_images, all_present, all_before, all_after), (without, images, present, before, after) = rows
    assert every == "| val" and without.endswith("without ring, star, cross")
    # The split, counted from the dataset's own tags: images without a dropped class, the classes they hold.
    report = json.loads((tiny_pipeline_run.run_dir / "report.json").read_text())
    names = report["dataset"]["class_names"]
    tags = VOCSegmentationDataset(report["dataset"]["root"], "val", names).labels > 0  # (N, C)
    kept = tags[~tags[:, [names.index(name) for name in ("ring", "star", "cross")]].any(1)]
    assert (all_images, all_present) == (str(len(tags)), f"{int(tags.any(0).sum())}/{len(names)}")
    assert (images, present) == (str(len(kept)), f"{int(kept.any(0).sum())}/{len(names)}")
    assert float(all_before) == float(all_after.rstrip(" |"))
    assert float(before) < float(after.rstrip(" |"))

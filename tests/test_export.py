"""``rca-export``: the segmentation network as ONNX / TorchScript with dynamic batch, height and width, and
the exported file's logits equal to PyTorch's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rca_lightning.data import SyntheticVOCGenerator
from rca_lightning.inference.export import exported_bytes, max_abs_difference, run_exported
from rca_lightning.inference.trained_runs import load_segmentation_network
from tests.console_runs import ScriptResult, run_in_process
from tests.stage_helpers import make_segmentation_run

CLASSES = ["disc", "square", "triangle"]
EXTENSIONS = {"onnx": "onnx", "torchscript": "pt"}


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    root = folder / "VOC2012"
    SyntheticVOCGenerator(CLASSES, num_train=4, num_val=2, image_size=48, seed=0).generate(root)
    make_segmentation_run(folder / "run", root, CLASSES)
    return folder / "run"


def run_export(*overrides: str, log_dir: Path) -> ScriptResult:
    """``rca-export``, run in this process (``tests/console_runs.py``)."""
    return run_in_process("rca-export", *overrides, f"hydra.run.dir={log_dir}")


@pytest.mark.slow
@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_exported_network_matches_pytorch_at_other_batch_and_sizes(seg_run, tmp_path, export_format):
    output = tmp_path / f"deeplab.{EXTENSIONS[export_format]}"
    result = run_export(f"run_dir={seg_run}", f"format={export_format}", f"output={output}", log_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{output}: max abs difference to PyTorch's logits" in result.stdout
    record = json.loads(output.with_name(output.name + ".json").read_text())
    assert record["class_names"] == ["background", *CLASSES] and record["max_abs_difference"] <= 1e-4
    assert record["checked_size"] == [48, 48]  # the run's first dataset image
    net = load_segmentation_network(seg_run).net
    for shape in [(3, 3, 45, 77), (1, 3, 130, 61)]:  # neither the traced batch nor its size
        images = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = net(images).numpy()
        exported = run_exported(output, export_format, images)
        assert exported.shape == (shape[0], len(CLASSES) + 1, *shape[2:])
        assert np.abs(exported - expected).max() <= 1e-4


@pytest.mark.slow
def test_a_difference_above_the_tolerance_fails_in_one_line_and_writes_nothing(seg_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    output = out / "deeplab.onnx"
    result = run_export(f"run_dir={seg_run}", f"output={output}", "tolerance=1e-30", log_dir=tmp_path / "log")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "logits differ from PyTorch's by" in lines[0] and "tolerance=1e-30" in lines[0]
    assert str(output) in lines[0] and "nothing written" in lines[0]
    assert list(out.iterdir()) == []  # no file that failed its check, no record, no temporary file


@pytest.mark.slow
def test_deeplab_v3_plus_exports_to_onnx(tmp_path):
    root = tmp_path / "VOC2012"
    SyntheticVOCGenerator(CLASSES, num_train=2, num_val=1, image_size=32, seed=0).generate(root)
    make_segmentation_run(tmp_path / "run", root, CLASSES, "seg_model=deeplab_v3plus")
    net = load_segmentation_network(tmp_path / "run").net
    content = exported_bytes(net, "onnx")
    pixels = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    assert max_abs_difference(net, content, "onnx", pixels, mean, std) <= 1e-4

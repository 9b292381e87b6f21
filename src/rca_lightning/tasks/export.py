"""``rca-export``: a run's segmentation network as an ONNX or TorchScript file (conf/export.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from rca_lightning.imaging.image_arrays import read_rgb_file
from rca_lightning.inference.export import exported_bytes, max_abs_difference, write_export_record
from rca_lightning.inference.prediction import list_inputs
from rca_lightning.inference.trained_runs import load_trained_run
from rca_lightning.utils.atomic import write_bytes_atomically
from rca_lightning.utils.errors import InvalidData, InvalidSetting

log = logging.getLogger(__name__)


def sample_image(sample: str | None, dataset_root: str | None) -> tuple[np.ndarray, str]:
    """The (H, W, 3) uint8 image the export is checked on, and what it is."""
    if sample:
        return read_rgb_file(sample), str(sample)
    images = Path(dataset_root or "") / "JPEGImages"
    if dataset_root and images.is_dir():
        first = list_inputs(str(images))[0]
        return read_rgb_file(first), str(first)
    pixels = np.random.default_rng(0).integers(0, 256, (131, 157, 3), dtype=np.uint8)
    return pixels, "a fixed random 157x131 image (the run's dataset is not here)"


def export(cfg: DictConfig) -> dict:
    """Export the segmentation network of ``cfg.run_dir``, check the exported network and only then write
    its file (atomically) and record; returns the record.

    Raises:
        InvalidData: the exported network's logits differ from PyTorch's by more than ``cfg.tolerance``;
            nothing is written.
    """
    if cfg.tolerance <= 0:
        raise InvalidSetting(f"tolerance={cfg.tolerance}: expected a positive number")
    run = load_trained_run(cfg.run_dir, source="seg", trusted_targets=cfg.trusted_targets)
    pixels, origin = sample_image(cfg.sample, run.dataset_root)
    output = Path(cfg.output)
    content = exported_bytes(run.model.net, cfg.format, cfg.opset)
    difference = max_abs_difference(run.model.net, content, cfg.format, pixels, run.image_mean, run.image_std)
    if difference > cfg.tolerance:
        raise InvalidData(
            f"{output}: the exported network's logits differ from PyTorch's by {difference:.3g} on {origin}; "
            f"expected at most tolerance={cfg.tolerance} (nothing written)"
        )
    record = {
        "format": cfg.format,
        "run_folder": str(run.folder),
        "checkpoint": str(run.checkpoint),
        "class_names": ["background", *run.class_names],
        "mean": list(run.image_mean),
        "std": list(run.image_std),
        "checked_on": origin,
        "checked_size": list(pixels.shape[:2]),
        "max_abs_difference": difference,
    }
    write_bytes_atomically(output, content)
    write_export_record(output, record)
    print(f"{output}: max abs difference to PyTorch's logits {difference:.3g} on {origin}")
    return record

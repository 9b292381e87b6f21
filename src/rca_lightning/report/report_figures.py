"""``figures/grid.png`` of a pipeline run: image / ground truth / CAM / pseudo mask / prediction per row."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from rca_lightning.lit.seg_module import SegLitModule
from rca_lightning.pseudo.cam_writer import cam_path, load_cam_file
from rca_lightning.pseudo.pseudo_mask_writer import mask_path
from rca_lightning.report.figure_grid import cam_overlay, colourise_mask
from rca_lightning.utils.atomic import write_bytes_atomically

GRID_TITLES = ("image", "ground truth", "CAM", "pseudo mask", "prediction")


def load_segmentation_model(segmentation_dir: Path) -> SegLitModule:
    """The network of a finished ``rca-seg`` folder (its config and evaluated checkpoint), in eval mode."""
    summary = json.loads((segmentation_dir / "metrics.json").read_text())
    checkpoint = summary.get("checkpoint") or segmentation_dir / "checkpoints" / "last.ckpt"
    cfg = OmegaConf.load(segmentation_dir / ".hydra" / "config.yaml")
    model = instantiate(cfg.seg_model)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return model.eval()


def predict_mask(model: SegLitModule, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 class indices through the model's evaluation path."""
    mean = torch.tensor(model.hparams.image_mean).view(3, 1, 1)
    std = torch.tensor(model.hparams.image_std).view(3, 1, 1)
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255  # (3, H, W)
    scores = model.predict_scores(((pixels - mean) / std)[None])  # (1, C + 1, H, W)
    return scores[0].argmax(0).to(torch.uint8).numpy()


def grid_rows(
    image_ids: Sequence[str],
    image_paths: Sequence[Path],
    ground_truth_paths: Sequence[Path],
    cams_dir: Path,
    masks_dir: Path,
    model: SegLitModule,
) -> list[list[np.ndarray]]:
    """One row of five RGB panels per image (a handful of images: a plain loop)."""
    rows = []
    for image_id, image_path, truth_path in zip(image_ids, image_paths, ground_truth_paths, strict=True):
        image = np.array(Image.open(image_path).convert("RGB"))
        truth = np.asarray(Image.open(truth_path)) if truth_path.is_file() else np.full(image.shape[:2], 255)
        classes, cams = load_cam_file(cam_path(cams_dir, image_id))
        pseudo_mask = np.asarray(Image.open(mask_path(masks_dir, image_id)))
        rows.append(
            [
                image,
                colourise_mask(truth),
                cam_overlay(image, cams, classes),
                colourise_mask(pseudo_mask),
                colourise_mask(predict_mask(model, image)),
            ]
        )
    return rows


def write_grid(grid: np.ndarray, path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    write_bytes_atomically(path, buffer.getvalue())
    return path


__all__ = ["GRID_TITLES", "grid_rows", "load_segmentation_model", "predict_mask", "write_grid"]

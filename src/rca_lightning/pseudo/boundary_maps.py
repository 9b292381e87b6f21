"""Boundary maps on disk: ``<boundary_dir>/<image_id>.npy``, float16 (h, w) boundary probabilities at stride 4
of the image resized by the network's ``image_scale`` s (``h = ceil(round(H s) / 4)``), written by
``rca-boundary``'s prediction writer and read by the random walk refiner; ``settings.json`` of the folder
records s."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from rca_lightning.utils.atomic import path_inside, write_bytes_atomically
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from rca_lightning.utils.setting_ranges import MAX_SCALE, number_in_range
from rca_lightning.utils.state_files import read_json_object


def boundary_map_path(boundary_dir: str | os.PathLike, image_id: str) -> Path:
    """Where the map of ``image_id`` lives (``InvalidData`` where that is outside ``boundary_dir``)."""
    return path_inside(boundary_dir, f"{image_id}.npy")


def save_boundary_map(path: Path, boundary: np.ndarray) -> None:
    """Write one (h, w) map as float16 ``.npy``, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(boundary, dtype=np.float16), allow_pickle=False)
    write_bytes_atomically(path, buffer.getvalue())


def boundary_image_scale(boundary_dir: str | os.PathLike) -> float:
    """The ``image_scale`` the maps of ``boundary_dir`` were made at (its ``settings.json``; 1 without)."""
    settings = Path(boundary_dir) / "settings.json"
    if not settings.is_file():
        return 1.0
    scale = read_json_object(settings, "the settings rca-boundary wrote").get("image_scale", 1.0)
    try:
        return float(number_in_range("image_scale", scale, 0.0, MAX_SCALE, above_minimum=True))
    except InvalidSetting as error:
        raise InvalidData(f"{settings}: {error} (rca-boundary's settings)") from error


def read_boundary_map(boundary_dir: str | os.PathLike, image_id: str, size: tuple[int, int]) -> np.ndarray:
    """The (h, w) float32 boundary map of ``image_id``, which must be ``size``; MissingInput / InvalidData
    naming the file otherwise."""
    path = boundary_map_path(boundary_dir, image_id)
    if not path.is_file():
        raise MissingInput(f"boundary map {path} not found: expected <image_id>.npy from rca-boundary")
    try:
        boundary = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InvalidData(f"{path}: not a readable .npy boundary map ({error})") from error
    if boundary.shape != tuple(size):
        raise InvalidData(
            f"{path}: shape {boundary.shape}, expected {tuple(size)} (stride 4 of the image at the folder's "
            "image_scale)"
        )
    return boundary.astype(np.float32)


class BoundaryMapWriter(BasePredictionWriter):
    """Writes each predicted batch's boundary maps (``BoundaryLitModule.predict_step``: ``image_id`` and
    ``boundary`` (B, h, w)) as they come; run it with batches of one image size (``val_batch_size`` 1 for
    images of several sizes)."""

    def __init__(self, boundary_dir: str | os.PathLike) -> None:
        super().__init__(write_interval="batch")
        self.boundary_dir = Path(boundary_dir)

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: dict,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for image_id, boundary in zip(prediction["image_id"], prediction["boundary"], strict=True):
            save_boundary_map(boundary_map_path(self.boundary_dir, image_id), boundary.numpy())


__all__ = [
    "BoundaryMapWriter",
    "boundary_image_scale",
    "boundary_map_path",
    "read_boundary_map",
    "save_boundary_map",
]

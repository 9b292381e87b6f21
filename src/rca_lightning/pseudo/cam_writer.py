"""CAM files (one ``.npz`` per image) and the prediction writer that stores them as they are computed.

File format of ``<cams_dir>/<image_id>.npz``:
    ``classes``: (K,) int64, the foreground class indices (0-based, ``class_names`` order) the image is
        tagged with, increasing; K may be 0.
    ``cams``: (K, H, W) at the image's resolution, each map scaled to [0, 1] by its maximum; float16, or
        uint8 holding ``round(255 * score)``.
Files are written to a temporary sibling and renamed into place, so a file that exists is complete;
:func:`cam_file_is_complete` also rejects files that do not load (e.g. copied half-way).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from rca_lightning.utils.atomic import write_bytes_atomically

CAM_DTYPES = ("float16", "uint8")


def cam_path(cams_dir: str | os.PathLike, image_id: str) -> Path:
    """Where the CAM file of ``image_id`` lives."""
    return Path(cams_dir) / f"{image_id}.npz"


def save_cam_file(
    path: str | os.PathLike,
    classes: np.ndarray,
    cams: np.ndarray,
    dtype: str = "float16",
    compress: bool = False,
) -> None:
    """Write one image's CAMs atomically.

    Args:
        path: the ``.npz`` file.
        classes: (K,) foreground class indices.
        cams: (K, H, W) scores in [0, 1].
        dtype: ``"float16"`` or ``"uint8"`` (``round(255 * score)``).
        compress: zip-deflate the arrays (smaller, slower).
    """
    if dtype not in CAM_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {CAM_DTYPES}")
    cams = np.clip(np.asarray(cams, dtype=np.float32), 0.0, 1.0)
    stored = cams.astype(np.float16) if dtype == "float16" else np.rint(cams * 255).astype(np.uint8)
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(
        buffer, classes=np.asarray(classes, dtype=np.int64), cams=stored
    )
    write_bytes_atomically(Path(path), buffer.getvalue())


def load_cam_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a CAM file: ``classes`` (K,) int64 and ``cams`` (K, H, W) float32 in [0, 1]."""
    try:
        with np.load(path) as data:
            classes, cams = data["classes"], data["cams"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable CAM file ({error})") from error
    if classes.ndim != 1 or cams.ndim != 3 or len(classes) != len(cams):
        raise ValueError(
            f"{path}: expected classes (K,) and cams (K, H, W), got {classes.shape} and {cams.shape}"
        )
    cams = cams.astype(np.float32) / 255.0 if cams.dtype == np.uint8 else cams.astype(np.float32)
    return classes.astype(np.int64), cams


def cam_file_is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists and loads as a CAM file (a truncated or corrupt file does not)."""
    if not Path(path).is_file():
        return False
    try:
        load_cam_file(path)
    except ValueError:
        return False
    return True


def pending_image_ids(cams_dir: str | os.PathLike, image_ids: Sequence[str]) -> list[int]:
    """Positions in ``image_ids`` of the images without a complete CAM file."""
    return [
        i for i, image_id in enumerate(image_ids) if not cam_file_is_complete(cam_path(cams_dir, image_id))
    ]


class CAMWriter(BasePredictionWriter):
    """Writes each predicted batch to one CAM file per image, as soon as it is computed.

    Nothing is kept between batches, so memory does not grow with the number of images; use it with
    ``trainer.predict(..., return_predictions=False)``. Several ranks may write the same image (the
    distributed sampler pads the last batches): writes are atomic and give the same content.

    Args:
        cams_dir: output folder.
        dtype: stored dtype, ``"float16"`` or ``"uint8"``.
        compress: zip-deflate the files.

    The predictions it receives are lists of dicts with ``image_id`` (str), ``classes`` (K,) and
    ``cams`` (K, H, W) tensors or arrays (see :class:`rca_lightning.pseudo.cam_inference.CAMPredictor`).
    """

    def __init__(self, cams_dir: str | os.PathLike, dtype: str = "float16", compress: bool = False) -> None:
        super().__init__(write_interval="batch")
        if dtype not in CAM_DTYPES:
            raise ValueError(f"dtype={dtype!r}: expected one of {CAM_DTYPES}")
        self.cams_dir = Path(cams_dir)
        self.dtype = dtype
        self.compress = compress

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: list[dict],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for record in prediction:
            save_cam_file(
                cam_path(self.cams_dir, record["image_id"]),
                np.asarray(record["classes"]),
                np.asarray(record["cams"], dtype=np.float32),
                dtype=self.dtype,
                compress=self.compress,
            )

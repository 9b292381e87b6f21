"""CAM files: one ``.npz`` per image, written as computed by :class:`rca_lightning.pseudo.CAMWriter`.

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

import numpy as np

from rca_lightning.utils.atomic import path_inside, write_bytes_atomically
from rca_lightning.utils.errors import InvalidData

CAM_DTYPES = ("float16", "uint8")


def cam_path(cams_dir: str | os.PathLike, image_id: str) -> Path:
    """Where the CAM file of ``image_id`` lives (``InvalidData`` where that is outside ``cams_dir``)."""
    return path_inside(cams_dir, f"{image_id}.npz")


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
        reason = " ".join(str(error).split())
        raise InvalidData(
            f"{path}: not a readable CAM file ({reason}); expected one written by rca-cams"
        ) from error
    if classes.ndim != 1 or cams.ndim != 3 or len(classes) != len(cams):
        raise InvalidData(
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

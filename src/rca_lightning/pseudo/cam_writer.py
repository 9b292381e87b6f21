"""CAM files: one ``.npz`` per image, written as computed by :class:`rca_lightning.pseudo.CAMWriter`.

File format of ``<cams_dir>/<image_id>.npz``:
    ``classes``: (K,) int64, the foreground class indices (0-based, ``class_names`` order) the image is
        tagged with, increasing; K may be 0.
    ``cams``: (K, h, w), each map scaled to [0, 1] by its maximum; float16, or uint8 holding
        ``round(255 * score)``. At the image's resolution (h, w) = (H, W), or with a storage stride s > 1
        at (ceil(H / s), ceil(W / s)), each cell the mean of the s x s pixels it covers.
    ``size``: (2,) int64, the image's (H, W): present only in files stored at a stride, which
        :func:`load_cam_file` returns resized (bilinear) to it.
A CAM is a sum of bilinearly upsampled feature maps whose finest grid is the output stride over the largest
scale (8 / 2 = 4 for the shipped presets): stored at that stride it keeps what the network saw at 1 / s^2 of
the bytes (at 500 x 375, float16: 23 kB per class instead of 375 kB).
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
import torch
import torch.nn.functional as F

from rca_lightning.utils.atomic import path_inside, write_bytes_atomically
from rca_lightning.utils.errors import InvalidData

CAM_DTYPES = ("float16", "uint8")
# The largest image side a CAM file may name (its size is checked before anything is allocated).
MAX_SIDE = 65_536


def cam_path(cams_dir: str | os.PathLike, image_id: str) -> Path:
    """Where the CAM file of ``image_id`` lives (``InvalidData`` where that is outside ``cams_dir``)."""
    return path_inside(cams_dir, f"{image_id}.npz")


def save_cam_file(
    path: str | os.PathLike,
    classes: np.ndarray,
    cams: np.ndarray,
    dtype: str = "float16",
    compress: bool = False,
    stride: int = 1,
) -> None:
    """Write one image's CAMs atomically.

    Args:
        path: the ``.npz`` file.
        classes: (K,) foreground class indices.
        cams: (K, H, W) scores in [0, 1].
        dtype: ``"float16"`` or ``"uint8"`` (``round(255 * score)``).
        compress: zip-deflate the arrays (smaller, slower).
        stride: store the maps at 1 / ``stride`` of the image's resolution (area means) and its size.
    """
    if dtype not in CAM_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {CAM_DTYPES}")
    cams = np.clip(np.asarray(cams, dtype=np.float32), 0.0, 1.0)
    arrays = {"classes": np.asarray(classes, dtype=np.int64)}
    if stride > 1:
        arrays["size"] = np.asarray(cams.shape[1:], dtype=np.int64)
        cams = area_downsampled(cams, stride)
    arrays["cams"] = cams.astype(np.float16) if dtype == "float16" else np.rint(cams * 255).astype(np.uint8)
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    write_bytes_atomically(Path(path), buffer.getvalue())


def area_downsampled(cams: np.ndarray, stride: int) -> np.ndarray:
    """(K, ceil(H / stride), ceil(W / stride)) float32: each stride x stride cell the mean of its pixels."""
    # ceil_mode: the last row and column of cells are partial, their means over the pixels they hold.
    return F.avg_pool2d(torch.from_numpy(cams)[None], stride, stride, ceil_mode=True)[0].numpy()


def bilinear_resized(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, *size) float32 in [0, 1]: ``cams`` resized bilinearly (pixel centres aligned)."""
    if len(cams) == 0:
        return np.zeros((0, *size), np.float32)
    resized = F.interpolate(torch.from_numpy(cams)[None], size=size, mode="bilinear", align_corners=False)
    return resized[0].clamp_(0.0, 1.0).numpy()


def load_cam_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a CAM file: ``classes`` (K,) int64 and ``cams`` (K, H, W) float32 in [0, 1], at the image's
    size (H, W) (a file stored at a stride is resized to it)."""
    classes, cams, size = _read_cam_file(path)
    cams = cams.astype(np.float32) / 255.0 if cams.dtype == np.uint8 else cams.astype(np.float32)
    if size is not None:
        cams = bilinear_resized(cams, size)
    return classes.astype(np.int64), cams


def _read_cam_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """The stored arrays, checked: classes (K,), cams (K, h, w) and the image's (H, W) when stored at a
    stride; InvalidData naming the file otherwise."""
    try:
        with np.load(path) as data:
            classes, cams = data["classes"], data["cams"]
            size = data["size"] if "size" in data.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split())
        raise InvalidData(
            f"{path}: not a readable CAM file ({reason}); expected one written by rca-cams"
        ) from error
    if classes.ndim != 1 or cams.ndim != 3 or len(classes) != len(cams):
        raise InvalidData(
            f"{path}: expected classes (K,) and cams (K, H, W), got {classes.shape} and {cams.shape}"
        )
    if size is None:
        return classes, cams, None
    if size.shape != (2,) or size.dtype.kind not in "iu" or not all(0 < side <= MAX_SIDE for side in size):
        raise InvalidData(f"{path}: size {size.tolist()}: expected (H, W), each in 1..{MAX_SIDE}")
    height, width = (int(side) for side in size)
    if not (0 < cams.shape[1] <= height and 0 < cams.shape[2] <= width):
        raise InvalidData(
            f"{path}: cams of size {cams.shape[1:]}: expected a grid within the image's {size.tolist()}"
        )
    return classes, cams, (height, width)


def cam_file_is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists and loads as a CAM file (a truncated or corrupt file does not)."""
    if not Path(path).is_file():
        return False
    try:
        _read_cam_file(path)
    except ValueError:
        return False
    return True


def pending_image_ids(cams_dir: str | os.PathLike, image_ids: Sequence[str]) -> list[int]:
    """Positions in ``image_ids`` of the images without a complete CAM file."""
    return [
        i for i, image_id in enumerate(image_ids) if not cam_file_is_complete(cam_path(cams_dir, image_id))
    ]

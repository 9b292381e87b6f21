"""Masks as palette PNGs: the one writer and the one reader of every mask file the project touches.

A mask is an (H, W) uint8 array of class values (0 background, ``1..C`` classes, 255 ignored). It is
stored as a palette (P mode) PNG with the VOC colour map, as VOC's ``SegmentationClass`` masks are, so
that image viewers show the classes in colour while the pixel values stay the class values. Ground
truth, pseudo masks, COCO's rendered masks and predictions are all written by :func:`palette_png_bytes`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from rca_lightning.utils.atomic import write_bytes_atomically
from rca_lightning.utils.errors import InvalidData, MissingInput

# What PIL raises for a file that is not a (complete) image.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError)


def voc_palette() -> np.ndarray:
    """The standard VOC colour map used by the palette PNGs of ``SegmentationClass``.

    Entry ``i`` spreads the bits of ``i`` over the three channels, most significant first
    (bit 0 -> red, bit 1 -> green, bit 2 -> blue, then the next three bits one level lower).

    Returns:
        (256, 3) uint8 array; row ``i`` is the RGB colour of mask value ``i``.
    """
    indices = np.arange(256, dtype=np.int64)  # (256,)
    palette = np.zeros((256, 3), dtype=np.int64)  # (256, 3)
    for level in range(8):  # 8 bit levels of the index, not a per-item loop
        bits = (indices[:, None] >> (3 * level + np.arange(3))[None, :]) & 1  # (256, 3)
        palette |= bits << (7 - level)
    return palette.astype(np.uint8)


# The palette as PIL takes it (768 ints), computed once per process.
_PNG_PALETTE = voc_palette().reshape(-1).tolist()


def palette_png_bytes(mask: np.ndarray) -> bytes:
    """(H, W) uint8 class values -> the bytes of a palette PNG with the VOC colour map."""
    values = np.asarray(mask)
    if values.ndim != 2:
        raise ValueError(f"mask: expected (H, W) class values, got shape {values.shape}")
    png = Image.fromarray(values.astype(np.uint8, copy=False), mode="L")
    png.putpalette(_PNG_PALETTE)  # L -> P
    buffer = io.BytesIO()
    png.save(buffer, format="PNG")
    return buffer.getvalue()


def write_palette_png(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write an (H, W) uint8 mask as a palette PNG, atomically (a reader never sees half a file)."""
    write_bytes_atomically(Path(path), palette_png_bytes(mask))
    return Path(path)


def read_mask_png(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 values of a palette or grey PNG.

    Raises:
        MissingInput: the file does not exist.
        InvalidData: it does not decode completely, or is not a palette (P) or grey (L) PNG; the message
            names the file.
    """
    if not Path(path).is_file():
        raise MissingInput(f"{path} not found: expected a PNG mask")
    try:
        with Image.open(path) as png:
            if png.mode not in ("P", "L"):
                raise InvalidData(f"{path}: mode {png.mode!r}; expected a palette (P) or grey (L) PNG")
            return np.array(png, dtype=np.uint8)
    except _DECODE_ERRORS as error:
        if isinstance(error, InvalidData):
            raise
        reason = " ".join(str(error).split())
        raise InvalidData(
            f"{path}: cannot decode PNG ({reason}); expected a palette (P) or grey (L) PNG"
        ) from error


def mask_file_is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists and decodes as a mask PNG (a truncated file does not)."""
    try:
        read_mask_png(path)
    except (InvalidData, MissingInput):
        return False
    return True


__all__ = ["mask_file_is_complete", "palette_png_bytes", "read_mask_png", "voc_palette", "write_palette_png"]

"""PASCAL VOC 2012 class names and colour map."""

from __future__ import annotations

import numpy as np

VOC_CLASS_NAMES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 20 foreground classes of PASCAL VOC, in VOC order (mask value = index + 1)."""

IGNORE_INDEX: int = 255
"""Mask value of pixels excluded from training and scoring (object borders, padding)."""


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

"""PASCAL VOC 2012 class names, ignore value and colour map (``voc_palette``, kept with the PNG writer)."""

from __future__ import annotations

from rca_lightning.imaging.palette_png import voc_palette

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

__all__ = ["IGNORE_INDEX", "VOC_CLASS_NAMES", "voc_palette"]

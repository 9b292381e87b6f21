"""Saliency maps for the methods trained with them (EPS, RCA on EPS): ``<saliency_dir>/<image_id>.png``.

A map is read the way EPS reads its PFAN maps: the PNG's R, G and B averaged (a grey PNG is its own average)
and divided by 255, giving a float map in [0, 1] (1 = salient). A map of another size than its image is
resized to the image's size (linear) before augmentation; the training transform then moves it with the
image (``rca_lightning.data.transforms.follow_geometry``).

Only datasets given a ``saliency_dir`` read maps (``VOCDataModule.require_saliency`` turns that on for the
train split); a missing map stops the dataset's construction in one line (``check_saliency_maps``), an
undecodable one the split's validation (``rca_lightning.data.file_checks``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rca_lightning.utils.errors import InvalidData, MissingInput

SALIENCY_SETTING = "data.saliency_dir"
# PIL modes read as grey, and modes whose R, G, B are averaged (a palette PNG through its colours).
_GREY_MODES = frozenset({"1", "L", "LA"})
_COLOUR_MODES = frozenset({"P", "PA", "RGB", "RGBA"})
# What PIL raises for a file it cannot read or decode to the end.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def saliency_map_path(saliency_dir: str | os.PathLike, image_id: str) -> Path:
    """``<saliency_dir>/<image_id>.png``."""
    return Path(saliency_dir) / f"{image_id}.png"


def decode_saliency(path: str | os.PathLike) -> np.ndarray:
    """A saliency PNG as EPS reads it: mean of R, G and B (grey PNGs as they are) over 255.

    Args:
        path: the PNG (8-bit grey, palette, RGB or RGBA; alpha is ignored).

    Returns:
        (h, w) float32 in [0, 1], the PNG's own size.

    Raises:
        InvalidData: the file does not decode, or has a mode that is not an 8-bit grey or colour image.
    """
    try:
        with Image.open(path) as png:
            mode = png.mode
            if mode in _GREY_MODES:
                values = np.asarray(png.convert("L"), np.float32)  # (h, w)
            elif mode in _COLOUR_MODES:
                values = np.asarray(png.convert("RGB"), np.float32).mean(axis=2)  # (h, w)
            else:
                values = None
    except _DECODE_ERRORS as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InvalidData(f"saliency map {path} does not decode ({reason})") from error
    if values is None:
        raise InvalidData(f"saliency map {path} has mode {mode!r}; expected an 8-bit grey or RGB PNG")
    return values / 255.0


def read_saliency(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """A saliency map at its image's size.

    Args:
        path: the PNG (see ``decode_saliency``).
        size: (H, W) of the image.

    Returns:
        (H, W) float32 in [0, 1]; resized with linear interpolation where the PNG has another size.
    """
    saliency = decode_saliency(path)  # (h, w)
    if saliency.shape != tuple(size):
        saliency = cv2.resize(saliency, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return np.clip(saliency, 0.0, 1.0)


def check_saliency_maps(
    saliency_dir: str | os.PathLike, image_ids: Sequence[str], listed_in: str | os.PathLike
) -> None:
    """Raise ``MissingInput`` in one line when the folder or any image's map is missing.

    Args:
        saliency_dir: the folder of the maps (``data.saliency_dir``).
        image_ids: the ids of the split, in list order (the first missing one is named).
        listed_in: the split list (or annotation file) named in the message.
    """
    folder = Path(saliency_dir)
    if not folder.is_dir():
        raise MissingInput(
            f"{SALIENCY_SETTING}={folder} not found: expected a folder of grey <image_id>.png saliency maps"
        )
    missing = [image_id for image_id in image_ids if not saliency_map_path(folder, image_id).is_file()]
    if missing:
        raise MissingInput(
            f"{SALIENCY_SETTING}={folder}: {len(missing)} of {len(image_ids)} images listed in {listed_in} "
            f"have no saliency map, first: {saliency_map_path(folder, missing[0])}"
        )


__all__ = [
    "SALIENCY_SETTING",
    "check_saliency_maps",
    "decode_saliency",
    "read_saliency",
    "saliency_map_path",
]

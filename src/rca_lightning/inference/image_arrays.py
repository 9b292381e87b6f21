"""Images between files, uint8 arrays and the normalised tensors the networks take.

One normalisation for the whole project: ``(pixels / 255 - mean) / std`` per channel, as the loaders'
``albumentations.Normalize(max_pixel_value=255)`` does, and its inverse for drawing and for the CRF.
:func:`read_rgb_file` opens what a user points at: any format PIL decodes (JPEG, PNG, BMP, WebP, ...),
greyscale, palette, 16-bit or with an alpha channel, in its EXIF orientation, as (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from rca_lightning.utils.errors import InvalidData, MissingInput

# The normalisation of every shipped network (ImageNet statistics, as timm's pretrained weights expect).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# What PIL raises for a file that is not a (complete) image.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def normalise_images(
    pixels: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 ``(pixels / 255 - mean) / std``."""
    images = pixels.permute(0, 3, 1, 2).float() / 255.0
    mean_ = images.new_tensor(mean).view(1, 3, 1, 1)
    std_ = images.new_tensor(std).view(1, 3, 1, 1)
    return (images - mean_) / std_


def denormalise_images(
    images: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """(B, 3, H, W) normalised -> (B, H, W, 3) uint8 RGB, rounded and clipped (the inverse of
    :func:`normalise_images` up to rounding)."""
    mean_ = images.new_tensor(mean).view(1, 3, 1, 1)
    std_ = images.new_tensor(std).view(1, 3, 1, 1)
    pixels = ((images.float() * std_ + mean_) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1)


def rgb_array(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> (H, W, 3) uint8 RGB (alpha dropped, greyscale repeated, 16-bit scaled)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale: to 8 bits by its range
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy


def read_rgb_file(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, decoded completely, turned upright by its EXIF orientation.

    Raises:
        MissingInput: the file does not exist.
        InvalidData: it does not decode (corrupt, truncated, or not an image); the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path} not found: expected an image file")
    try:
        with Image.open(path) as image:
            image.load()  # a truncated file fails here, not half-way through the network
            return rgb_array(ImageOps.exif_transpose(image))
    except _DECODE_ERRORS as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InvalidData(
            f"{path}: cannot decode image ({reason}); expected a JPEG, PNG, BMP or WebP file"
        ) from error


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "denormalise_images",
    "normalise_images",
    "read_rgb_file",
    "rgb_array",
]

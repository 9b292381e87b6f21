"""Images between files, uint8 arrays and the normalised tensors the networks take.

One normalisation for the whole project: ``(pixels / 255 - mean) / std`` per channel, as the loaders'
``albumentations.Normalize(max_pixel_value=255)`` does, and its inverse for drawing and for the CRF.
:func:`read_rgb_file` opens what a user points at: any format PIL decodes (JPEG, PNG, BMP, WebP, ...),
greyscale, palette, 16-bit or with an alpha channel, in its EXIF orientation, as (H, W, 3) uint8 RGB.

Given ``max_pixels``, it and :func:`count_pixels` read the size from the file's header and refuse a larger
image before decoding anything (a 137 KB PNG can hold 12000 x 12000 pixels, 411 MiB decoded); that limit
then replaces PIL's own decompression-bomb check (``PIL.Image.MAX_IMAGE_PIXELS``), so the message is
always the project's, naming the file and its size.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
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
# Held while PIL's pixel limit (a module global) is swapped for ours, so threads restore it in order.
_PIL_LIMIT_LOCK = threading.Lock()


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


def _undecodable(path: Path, error: BaseException) -> InvalidData:
    reason = " ".join(str(error).split()) or type(error).__name__
    return InvalidData(f"{path}: cannot decode image ({reason}); expected a JPEG, PNG, BMP or WebP file")


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """PIL's decompression-bomb check off inside the block where the caller checks ``max_pixels`` itself
    (PIL would warn, or refuse with its own message, before the size can be read); as it is without."""
    if max_pixels is None:
        yield
        return
    with _PIL_LIMIT_LOCK:
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _open_image(path: str | os.PathLike, max_pixels: int | None) -> Image.Image:
    """``path`` opened, its header read and nothing decoded; MissingInput / InvalidData naming it where it
    is absent, is no image or has more than ``max_pixels`` pixels."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path} not found: expected an image file")
    try:
        with _pil_pixel_limit(max_pixels):
            image = Image.open(path)
    except _DECODE_ERRORS as error:
        raise _undecodable(path, error) from error
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise InvalidData(
            f"{path}: {width} x {height} pixels ({width * height / 1e6:.1f} megapixels), more than "
            f"max_pixels={max_pixels}; expected a smaller image (or a larger max_pixels)"
        )
    return image


def count_pixels(path: str | os.PathLike, max_pixels: int | None = None) -> int:
    """Width x height of an image file, read from its header (nothing decoded).

    Raises:
        MissingInput: the file does not exist.
        InvalidData: its header does not parse, or it has more than ``max_pixels`` pixels (None: PIL's
            decompression-bomb limit); the message names the file (and its size).
    """
    with _open_image(path, max_pixels) as image:
        return image.width * image.height


def read_rgb_file(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, decoded completely, turned upright by its EXIF orientation.

    Args:
        path: the file.
        max_pixels: refuse a larger image from its header, before decoding (None: PIL's
            decompression-bomb limit).

    Raises:
        MissingInput: the file does not exist.
        InvalidData: it does not decode (corrupt, truncated, or not an image) or is larger than
            ``max_pixels``; the message names it.
    """
    image = _open_image(path, max_pixels)
    try:
        with image:
            image.load()  # a truncated file fails here, not half-way through the network
            return rgb_array(ImageOps.exif_transpose(image))
    except _DECODE_ERRORS as error:
        raise _undecodable(Path(path), error) from error


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "count_pixels",
    "denormalise_images",
    "normalise_images",
    "read_rgb_file",
    "rgb_array",
]

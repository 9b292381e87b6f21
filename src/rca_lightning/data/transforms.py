"""Albumentations pipelines over image + mask for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from rca_lightning.data.voc_classes import IGNORE_INDEX

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Nearest neighbour with pixel centres aligned like the linear image resize (cv2.INTER_NEAREST is
# shifted by up to half a source pixel).
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT


def _check_size(image_size: int, setting: str = "image_size") -> None:
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"{setting}={image_size!r}: expected a positive integer")


def _normalise_and_tensor(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def build_train_transform(
    image_size: int,
    scale_range: tuple[float, float] = (0.7, 1.3),
    crop: bool = True,
    hflip: bool = True,
    color_jitter: Sequence[float] | None = (0.3, 0.3, 0.3, 0.1),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Training augmentation: geometry on image and mask together, colour on the image only.

    ``crop=True``: the longest side is resized to ``image_size`` times a random factor in
    ``scale_range`` (one resize), padded to at least ``image_size`` (image with the mean
    colour, so padding normalises to 0; mask with 255, ignored) and randomly cropped to
    ``image_size`` x ``image_size``. ``crop=False``: squash-resize to ``image_size`` x
    ``image_size`` as the public RCA code does (``scale_range`` is unused).

    Args:
        image_size: side of the square output.
        scale_range: (min, max) of the longest side after resizing, in units of ``image_size``.
        crop: random scale + pad + crop (True) or squash-resize (False).
        hflip: random horizontal flip with probability 0.5.
        color_jitter: (brightness, contrast, saturation, hue) as in torchvision, or None.
        mean: per-channel mean in 0..1 for normalisation.
        std: per-channel standard deviation in 0..1.

    Returns:
        Compose taking ``image`` (H, W, 3) uint8 RGB and ``mask`` (H, W) uint8 and returning
        ``image`` float32 tensor (3, S, S) and ``mask`` uint8 tensor (S, S).
    """
    _check_size(image_size)
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range={tuple(scale_range)!r}: expected 0 < min <= max")
    steps: list[A.BasicTransform] = []
    if crop:
        pad_colour = tuple(255.0 * channel for channel in mean)
        smallest, largest = max(1, round(low * image_size)), max(1, round(high * image_size))
        steps += [
            # One resize (longest side to a random length in scale_range x image_size) keeps image
            # and mask better aligned than two chained resizes.
            A.LongestMaxSize(
                max_size=list(range(smallest, largest + 1)),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=MASK_INTERPOLATION,
            ),
            A.PadIfNeeded(
                min_height=image_size,
                min_width=image_size,
                position="random",
                border_mode=cv2.BORDER_CONSTANT,
                fill=pad_colour,
                fill_mask=IGNORE_INDEX,
            ),
            A.RandomCrop(height=image_size, width=image_size),
        ]
    else:
        steps.append(
            A.Resize(
                image_size, image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=MASK_INTERPOLATION
            )
        )
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if color_jitter is not None and any(value > 0 for value in color_jitter):
        if len(color_jitter) != 4:
            raise ValueError(
                f"color_jitter={tuple(color_jitter)!r}: expected (brightness, contrast, saturation, hue)"
            )
        brightness, contrast, saturation, hue = (float(value) for value in color_jitter)
        steps.append(
            A.ColorJitter(
                brightness=(max(0.0, 1 - brightness), 1 + brightness),
                contrast=(max(0.0, 1 - contrast), 1 + contrast),
                saturation=(max(0.0, 1 - saturation), 1 + saturation),
                hue=(-hue, hue),
                p=1.0,
            )
        )
    return A.Compose(steps + _normalise_and_tensor(mean, std))


def build_eval_transform(
    image_size: int | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Evaluation pipeline: squash-resize to ``image_size`` (None keeps the size), normalise.

    Args:
        image_size: side of the square output, or None to keep each image's own size
            (then batch size 1 for datasets with mixed sizes, and masks stay exact).
        mean: per-channel mean in 0..1.
        std: per-channel standard deviation in 0..1.

    Returns:
        Compose over ``image`` and ``mask`` like ``build_train_transform``.
    """
    steps: list[A.BasicTransform] = []
    if image_size is not None:
        _check_size(image_size)
        steps.append(
            A.Resize(
                image_size, image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=MASK_INTERPOLATION
            )
        )
    return A.Compose(steps + _normalise_and_tensor(mean, std))

"""Albumentations pipelines over image + mask for training and evaluation, and the geometry they applied."""

from __future__ import annotations

import os
from collections.abc import Sequence

# albumentations asks the network for a newer version at import; a library's import should not.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.imaging.image_arrays import IMAGENET_MEAN, IMAGENET_STD
from rca_lightning.utils.errors import InvalidSetting

# Nearest neighbour with pixel centres aligned like the linear image resize (cv2.INTER_NEAREST is
# shifted by up to half a source pixel).
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT
# Crop window of an untouched image: (x0, y0, x1, y1) in normalised original-image coordinates.
IDENTITY_CROP_BOX: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
# Geometric steps whose effect on the window ``crop_window`` knows; pixel-only steps are skipped.
_RESIZE_STEPS = frozenset({"Resize", "LongestMaxSize", "SmallestMaxSize", "RandomScale"})
_PAD_STEPS = frozenset({"PadIfNeeded", "Pad"})
_CROP_STEPS = frozenset({"RandomCrop", "CenterCrop", "Crop"})


def _check_size(image_size: int, setting: str = "data.image_size") -> None:
    if int(image_size) != image_size or image_size < 1:
        raise InvalidSetting(f"{setting}={image_size!r}: expected a positive integer")


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
        ``image`` float32 tensor (3, S, S), ``mask`` uint8 tensor (S, S) and ``applied_transforms``
        (the parameters each step used; ``crop_window`` turns them into the crop's source window, and
        ``follow_geometry`` puts a saliency map through the same geometry, padding it with 0).
    """
    _check_size(image_size)
    low, high = scale_range
    if not 0 < low <= high:
        raise InvalidSetting(f"data.scale_range={tuple(scale_range)!r}: expected 0 < min <= max")
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
            raise InvalidSetting(
                f"data.color_jitter={tuple(color_jitter)!r}: expected (brightness, contrast, saturation, hue)"
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
    return A.Compose(steps + _normalise_and_tensor(mean, std), save_applied_params=True)


def _is_pixel_only(step_name: str) -> bool:
    """Whether an albumentations step leaves geometry alone (colour, normalisation, tensor conversion)."""
    if step_name == "ToTensorV2":
        return True
    step_class = getattr(A, step_name, None)
    return isinstance(step_class, type) and issubclass(step_class, A.ImageOnlyTransform)


def crop_window(applied_transforms: Sequence[tuple[str, dict]]) -> tuple[np.ndarray, bool]:
    """Where an augmented image came from: its window in the original image, and whether it is mirrored.

    Follows resizes (edges map to edges, as cv2's linear resize does), padding, crops and horizontal
    flips, in the order they were applied (a crop after a flip is mirrored back).

    Args:
        applied_transforms: ``applied_transforms`` of a Compose built with ``save_applied_params=True``:
            (step name, parameters with the step's input ``shape``) per applied step.

    Returns:
        ``crop_box`` float32 (4,) = (x0, y0, x1, y1): the window of the output image (before its flip)
        in normalised original-image coordinates (0 and 1 are the outer pixel edges; values outside
        [0, 1] where the window includes padding), and ``flipped``: the output is mirrored left-right.
    """
    x0, y0, x1, y1 = IDENTITY_CROP_BOX
    flipped = False
    for position, (name, params) in enumerate(applied_transforms):
        height, width = params["shape"][:2]
        x_scale, y_scale = (x1 - x0) / width, (y1 - y0) / height  # original units per current pixel
        if name in _RESIZE_STEPS or _is_pixel_only(name):
            continue  # the window covers the whole (resized) image either way
        if name in _PAD_STEPS:
            left, right = params["pad_left"], params["pad_right"]
            if flipped:
                left, right = right, left
            x0, x1 = x0 - left * x_scale, x1 + right * x_scale
            y0, y1 = y0 - params["pad_top"] * y_scale, y1 + params["pad_bottom"] * y_scale
        elif name in _CROP_STEPS:
            if params.get("pad_params"):
                raise ValueError(f"{name}(pad_if_needed=True): crop_window expects padding as its own step")
            left, top, right, bottom = params["crop_coords"]
            if flipped:
                left, right = width - right, width - left
            x0, x1 = x0 + left * x_scale, x0 + right * x_scale
            y0, y1 = y0 + top * y_scale, y0 + bottom * y_scale
        elif name == "HorizontalFlip":
            flipped = not flipped
        else:
            raise ValueError(
                f"transform step {position} {name!r}: crop_window cannot follow it; expected resizes, "
                f"padding, crops, horizontal flips or pixel-only steps"
            )
    return np.array([x0, y0, x1, y1], np.float32), flipped


def follow_geometry(
    applied_transforms: Sequence[tuple[str, dict]],
    plane: np.ndarray,
    output_size: tuple[int, int],
    fill: float = 0.0,
) -> np.ndarray:
    """Put a per-pixel map of an image through the geometric steps the image went through.

    Replays the recorded parameters, so the map stays aligned with the image pixel for pixel: the same
    resizes (with the image's interpolation, not a mask's nearest neighbour), padding (with ``fill``), crops
    and horizontal flips, in order. Colour jitter, normalisation and tensor conversion leave it alone.

    Args:
        applied_transforms: ``applied_transforms`` of the image's Compose (``save_applied_params=True``).
        plane: (H, W) float32 map of the image's size before the transform.
        output_size: (H', W') of the transformed image (the size of a resize that is the last step).
        fill: value of padded pixels.

    Returns:
        (H', W') float32 map.
    """
    steps = list(applied_transforms)
    for position, (name, params) in enumerate(steps):
        if _is_pixel_only(name):
            continue
        expected = tuple(params["shape"][:2])
        if plane.shape != expected:
            raise ValueError(
                f"transform step {position} {name!r} had input {expected}, the map {plane.shape}"
            )
        if name in _RESIZE_STEPS:
            height, width = steps[position + 1][1]["shape"][:2] if position + 1 < len(steps) else output_size
            interpolation = params.get("interpolation", cv2.INTER_LINEAR)
            plane = cv2.resize(plane, (int(width), int(height)), interpolation=interpolation)
        elif name in _PAD_STEPS:
            plane = cv2.copyMakeBorder(
                plane,
                params["pad_top"],
                params["pad_bottom"],
                params["pad_left"],
                params["pad_right"],
                cv2.BORDER_CONSTANT,
                value=fill,
            )
        elif name in _CROP_STEPS:
            if params.get("pad_params"):
                raise ValueError(
                    f"{name}(pad_if_needed=True): follow_geometry expects padding as its own step"
                )
            left, top, right, bottom = params["crop_coords"]
            plane = plane[top:bottom, left:right]
        elif name == "HorizontalFlip":
            plane = cv2.flip(plane, 1)
        else:
            raise ValueError(
                f"transform step {position} {name!r}: follow_geometry cannot replay it; expected resizes, "
                f"padding, crops, horizontal flips or pixel-only steps"
            )
    if plane.shape != tuple(output_size):
        raise ValueError(f"the map ends at {plane.shape}, the transformed image at {tuple(output_size)}")
    return np.ascontiguousarray(plane)


def build_eval_transform(
    image_size: int | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    setting: str = "data.image_size",
) -> A.Compose:
    """Evaluation pipeline: squash-resize to ``image_size`` (None keeps the size), normalise.

    Args:
        image_size: side of the square output, or None to keep each image's own size
            (then batch size 1 for datasets with mixed sizes, and masks stay exact).
        mean: per-channel mean in 0..1.
        std: per-channel standard deviation in 0..1.
        setting: the configuration key of ``image_size``, named when it is not a positive integer.

    Returns:
        Compose over ``image`` and ``mask`` like ``build_train_transform`` (its ``applied_transforms`` let
        ``follow_geometry`` resize a saliency map with the image).
    """
    steps: list[A.BasicTransform] = []
    if image_size is not None:
        _check_size(image_size, setting)
        steps.append(
            A.Resize(
                image_size, image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=MASK_INTERPOLATION
            )
        )
    return A.Compose(steps + _normalise_and_tensor(mean, std), save_applied_params=True)

"""Multi-scale + horizontal-flip inference: the one implementation behind CAMs, evaluation and prediction.

Each view is the batch resized by one factor (and, with ``flip``, its mirror image in the same forward
pass); the network's maps of every view are brought back to the batch's own size and summed. CAM
inference keeps the sum of the ReLU'd maps (``rca-cams``); the segmentation network's evaluation and
``rca-predict`` average the logits (:func:`average_over_views`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from rca_lightning.utils.setting_ranges import MAX_SCALE, MAX_SCALE_COUNT, numbers_in_range

# The views of CAM inference (``rca-cams``'s default): the release's scales, each also mirrored.
CAM_SCALES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)


def check_views(
    scales: Sequence[float], flip: bool, setting: str = "tta_scales"
) -> tuple[tuple[float, ...], bool]:
    """The scales as floats; InvalidSetting naming ``setting`` unless they are 1 to ``MAX_SCALE_COUNT``
    finite factors in (0, ``MAX_SCALE``]."""
    return numbers_in_range(setting, scales, MAX_SCALE_COUNT, 0.0, MAX_SCALE, above_minimum=True), bool(flip)


def sum_over_views(
    map_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Sum of ``map_fn``'s maps over scales (and mirror images), each resized to the images' size.

    Args:
        map_fn: (N, 3, h, w) images -> (N, K, h', w') maps (any stride; bilinearly resized back).
        images: (B, 3, H, W) normalised images of one size.
        scales: resize factors of the input, each one batched forward pass.
        flip: run the mirrored images too (concatenated into the same pass, their maps mirrored back).

    Returns:
        (B, K, H, W) float32, the sum over ``len(scales) * (2 if flip else 1)`` views.
    """
    scales, flip = check_views(scales, flip)
    batch, _, height, width = images.shape
    total: torch.Tensor | None = None
    for scale in scales:  # a handful of views, each a batched forward pass
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = (
            images
            if size == (height, width)
            else F.interpolate(images, size, mode="bilinear", align_corners=False)
        )
        if flip:
            scaled = torch.cat([scaled, scaled.flip(-1)])  # (2B, 3, h, w)
        maps = map_fn(scaled).float()  # (N, K, h', w')
        if flip:
            maps = maps[:batch] + maps[batch:].flip(-1)
        if maps.shape[-2:] != (height, width):
            maps = F.interpolate(maps, (height, width), mode="bilinear", align_corners=False)
        total = maps if total is None else total + maps
    return total


def average_over_views(
    map_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """The mean of :func:`sum_over_views` over its views (logits averaged, as DeepLab is evaluated)."""
    views = len(scales) * (2 if flip else 1)
    return sum_over_views(map_fn, images, scales, flip) / views


__all__ = ["CAM_SCALES", "average_over_views", "check_views", "sum_over_views"]

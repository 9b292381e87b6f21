"""Class regions from coarse CAMs and masked average pooling of features inside them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def region_masks(coarse_cams: Tensor) -> Tensor:
    """Activated region of every class, by the public rule.

    The coarse maps are turned into per-pixel class probabilities (softmax over classes); the region of
    class c is the set of pixels where its probability map exceeds that map's own spatial mean.

    Args:
        coarse_cams: (B, C, h, w) class activation maps (any real values).

    Returns:
        (B, C, h, w) bool region masks.
    """
    if coarse_cams.dim() != 4:
        raise ValueError(
            f"region_masks: coarse_cams must be (B, C, h, w), got shape {tuple(coarse_cams.shape)}"
        )
    probabilities = coarse_cams.detach().softmax(dim=1)  # (B, C, h, w)
    spatial_mean = probabilities.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return probabilities > spatial_mean


def masked_average_pool(features: Tensor, masks: Tensor) -> Tensor:
    """Average of the features inside each mask, for every image and class at once.

    Masks whose spatial size differs from the features are resized with nearest interpolation.
    Float masks act as pixel weights (a bool mask is the 0/1 case). An empty mask gives a zero vector.

    Args:
        features: (B, D, h, w) feature map.
        masks: (B, C, H, W) bool or float masks.

    Returns:
        (B, C, D) region embeddings, differentiable w.r.t. ``features``.
    """
    if features.dim() != 4 or masks.dim() != 4 or features.shape[0] != masks.shape[0]:
        raise ValueError(
            "masked_average_pool: expected features (B, D, h, w) and masks (B, C, H, W) with the same B, "
            f"got {tuple(features.shape)} and {tuple(masks.shape)}"
        )
    weights = masks.to(features.dtype)  # (B, C, H, W)
    if weights.shape[-2:] != features.shape[-2:]:
        weights = F.interpolate(weights, size=features.shape[-2:], mode="nearest")  # (B, C, h, w)
    weighted_sums = torch.einsum("bchw,bdhw->bcd", weights, features)  # (B, C, D)
    areas = weights.sum(dim=(2, 3)).unsqueeze(-1)  # (B, C, 1)
    # Empty masks have a zero sum, so dividing by a clamped area yields exact zeros without NaN.
    safe_areas = torch.where(areas > 0, areas, torch.ones_like(areas))
    return weighted_sums / safe_areas

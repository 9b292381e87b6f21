"""Class activation maps as scores in [0, 1], and masks from scores: the one "ReLU, then divide by the
maximum" of the project (validation, CAM files, attention accumulation, ``rca-predict source=cams``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def peak_normalise(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU, then divide each map (the last two dimensions) by its maximum plus ``eps``.

    With ``eps=0`` every map with a positive value peaks at exactly 1; an all-zero map stays zero.

    Args:
        maps: (..., h, w) activation maps.
        eps: added to each maximum (keeps weak maps below 1 and the division finite).

    Returns:
        float32 maps of the same shape in [0, 1].
    """
    positive = maps.float().clamp_min(0)
    peak = positive.amax(dim=(-2, -1), keepdim=True)
    return positive / (peak + eps).clamp_min(torch.finfo(torch.float32).tiny)


def normalized_cam_scores(
    cams: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], eps: float = 1e-5
) -> torch.Tensor:
    """ReLU, upsample to ``size``, divide each map by its maximum, zero the classes not in the image.

    Args:
        cams: (B, C, h, w) raw activation maps.
        labels: (B, C) image-level multi-hot labels (the tags the image is known to carry).
        size: output (H, W).

    Returns:
        (B, C, H, W) scores in [0, 1].
    """
    cams = F.interpolate(cams.float().relu(), size=size, mode="bilinear", align_corners=False)
    return peak_normalise(cams, eps) * (labels > 0)[..., None, None]


def masks_from_scores(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Masks from class scores: the top class where its score exceeds ``threshold``, else background.

    Args:
        scores: (B, C, H, W) foreground scores in [0, 1].
        threshold: background threshold.

    Returns:
        (B, H, W) long, 0 = background, 1..C classes.
    """
    top_score, top_class = scores.max(dim=1)  # (B, H, W)
    return torch.where(top_score > threshold, top_class + 1, torch.zeros_like(top_class))


__all__ = ["masks_from_scores", "normalized_cam_scores", "peak_normalise"]

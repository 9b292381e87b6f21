"""Turn raw class activation maps into per-class scores in [0, 1] for evaluation and pseudo labels."""

import torch
import torch.nn.functional as F


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
    peak = cams.flatten(2).amax(-1)[..., None, None]  # (B, C, 1, 1)
    return cams / (peak + eps) * (labels > 0)[..., None, None]

"""IRN's inter-pixel affinity loss (Ahn et al., CVPR 2019), which trains the boundary network from relation
labels.

Pixel pairs: the relation labels at stride 4, every pixel with each partner in the half-disc of ``radius``
(``dy^2 + dx^2 < radius^2``, each unordered pair once), both inside the map. A pair is background-positive
when both labels are 0, foreground-positive when both are the same class (> 0), negative when they differ;
a pair touching an ignored pixel (255) is left out. The affinity of a pair is ``a = 1 - max B`` over the
straight path between them (:func:`~rca_lightning.utils.pixel_paths.path_offsets`). The loss is
``0.5 * (0.5 * mean(-log a | bg+) + 0.5 * mean(-log a | fg+) + mean(-log(1 - a) | neg))`` over the pairs of
the whole batch, with ``eps`` inside the logs (IRN: 1e-5); a kind without pairs adds 0.
"""

from __future__ import annotations

import torch

from rca_lightning.utils.pixel_paths import half_disc_offsets, path_offsets, shifted

IGNORE = 255


def affinity_loss(
    boundary: torch.Tensor, labels: torch.Tensor, radius: int = 10, eps: float = 1e-5
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of (B, h, w) boundary probabilities against (B, h, w) relation labels at the same stride.

    Returns:
        The loss and its three terms (``bg_positive``, ``fg_positive``, ``negative``: each kind's mean).
    """
    if boundary.shape != labels.shape:
        raise ValueError(f"boundary {tuple(boundary.shape)} and labels {tuple(labels.shape)} differ in shape")
    labels = labels.long()
    sums = {kind: boundary.new_zeros(()) for kind in ("bg_positive", "fg_positive", "negative")}
    counts = {kind: boundary.new_zeros(()) for kind in sums}  # on the device: no sync per offset
    for dy, dx in half_disc_offsets(radius):  # the disc's geometry, not images or classes
        partner = shifted(labels, dy, dx, IGNORE)  # (B, h, w) label of p + offset (255 outside)
        valid = (labels != IGNORE) & (partner != IGNORE)
        peak = torch.stack([shifted(boundary, py, px, 1.0) for py, px in path_offsets(dy, dx)]).amax(0)
        affinity = 1.0 - peak  # (B, h, w) affinity of (p, p + offset)
        same = valid & (labels == partner)
        positive_loss = -torch.log(affinity + eps)
        kinds = {
            "bg_positive": (same & (labels == 0), positive_loss),
            "fg_positive": (same & (labels > 0), positive_loss),
            "negative": (valid & (labels != partner), -torch.log(1.0 + eps - affinity)),
        }
        for kind, (pairs, losses) in kinds.items():
            sums[kind] = sums[kind] + torch.where(pairs, losses, 0.0).sum()
            counts[kind] = counts[kind] + pairs.sum()
    terms = {kind: sums[kind] / counts[kind].clamp_min(1) for kind in sums}
    loss = 0.5 * (0.5 * terms["bg_positive"] + 0.5 * terms["fg_positive"] + terms["negative"])
    return loss, terms


__all__ = ["affinity_loss"]

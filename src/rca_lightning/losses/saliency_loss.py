"""EPS saliency loss ("Railroad is not a Train", CVPR 2021): class maps against a given saliency map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rca_lightning.utils.errors import InvalidSetting


def _check_inputs(cams: Tensor, labels: Tensor, saliency: Tensor) -> None:
    if cams.dim() != 4 or cams.shape[1] < 2:
        raise ValueError(
            f"EPSSaliencyLoss: expected cams (B, C+1, h, w) with C >= 1, got {tuple(cams.shape)}"
        )
    batch_size, num_classes = cams.shape[0], cams.shape[1] - 1
    if labels.shape != (batch_size, num_classes):
        raise ValueError(
            f"EPSSaliencyLoss: labels must be ({batch_size}, {num_classes}) for cams {tuple(cams.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if not (
        (saliency.dim() == 3 and saliency.shape[0] == batch_size)
        or (saliency.dim() == 4 and saliency.shape[:2] == (batch_size, 1))
    ):
        raise ValueError(
            f"EPSSaliencyLoss: saliency must be ({batch_size}, H, W) or ({batch_size}, 1, H, W), "
            f"got {tuple(saliency.shape)}"
        )


def _probabilities_and_saliency(cams: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over the C+1 channels and the saliency map at CAM resolution (nearest), in float32 or wider."""
    dtype = torch.promote_types(cams.dtype, torch.float32)
    probs = torch.softmax(cams.to(dtype), dim=1)  # (B, C+1, h, w)
    if saliency.dim() == 3:
        saliency = saliency.unsqueeze(1)  # (B, 1, H, W)
    saliency = F.interpolate(
        saliency.to(device=cams.device, dtype=dtype), size=cams.shape[-2:], mode="nearest"
    )  # (B, 1, h, w)
    return probs, saliency


def eps_class_partition(probs: Tensor, labels: Tensor, saliency: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Split every image's tagged classes into the foreground and the background set of EPS.

    A tagged class k is foreground where ``|bin(P_k) & bin(S)| / |bin(P_k)| > tau`` (strictly), with
    ``bin(x) = x > 0.5`` (``round()``: exactly 0.5 goes to 0); otherwise it is background. A class whose
    binarised map is empty has ratio 0, so it is background for every tau >= 0. Untagged classes are in
    neither set; the background channel, always in the background set, is not part of the result.
    Nothing here is differentiated.

    Args:
        probs: (B, C+1, h, w) softmax over the class maps, background last.
        labels: (B, C) image tags; a class is tagged where its label is > 0.5.
        saliency: (B, 1, h, w) saliency at CAM resolution, in [0, 1].
        tau: overlap threshold in [0, 1].

    Returns:
        foreground: (B, C) bool.
        background: (B, C) bool, the tagged classes that are not foreground.
    """
    with torch.no_grad():
        class_on = probs[:, :-1].detach() > 0.5  # (B, C, h, w)
        salient = saliency.detach() > 0.5  # (B, 1, h, w)
        class_area = class_on.sum(dim=(2, 3))  # (B, C)
        overlap = (class_on & salient).sum(dim=(2, 3))  # (B, C)
        # In float64 the ratio is Python's overlap / area, so a ratio of exactly tau is not above tau.
        ratio = overlap.to(torch.float64) / class_area.clamp_min(1).to(torch.float64)  # (B, C), 0 if empty
        tagged = labels.to(device=probs.device, dtype=probs.dtype) > 0.5  # (B, C)
        foreground = tagged & (ratio > tau)
        background = tagged & ~foreground
    return foreground, background


class EPSSaliencyLoss(nn.Module):
    """EPS saliency loss: the saliency map estimated from the class maps, regressed onto the given one.

    With S the saliency map resized to the CAM size (nearest) and P the softmax over the C+1 channels, every
    tagged class joins the foreground or the background set by its overlap with the salient region (see
    ``eps_class_partition``), and

    ``S_hat = lam * sum_{k in fg} P_k + (1 - lam) * (1 - P_bg - sum_{k in bg} P_k)``,
    ``loss = mean over the B*h*w pixels of (S_hat - S)^2``, S kept continuous.

    Only the set selection is detached; gradients reach the class maps through P.

    Args:
        tau: overlap ratio a tagged class must exceed (strictly) to count as foreground (0.4 in EPS).
        lam: weight of the foreground map against the background map (0.5 for VOC, 0.9 for COCO in EPS).
    """

    def __init__(self, tau: float = 0.4, lam: float = 0.5) -> None:
        super().__init__()
        if not 0 <= tau <= 1:
            raise InvalidSetting(f"tau: expected a value in [0, 1], got {tau}")
        if not 0 <= lam <= 1:
            raise InvalidSetting(f"lam: expected a value in [0, 1], got {lam}")
        self.tau = tau
        self.lam = lam

    def extra_repr(self) -> str:
        return f"tau={self.tau}, lam={self.lam}"

    def forward(self, cams: Tensor, labels: Tensor, saliency: Tensor) -> Tensor:
        """Saliency loss of a batch.

        Args:
            cams: (B, C+1, h, w) raw class-map logits, the last channel background.
            labels: (B, C) multi-hot image tags (float or bool).
            saliency: (B, H, W) or (B, 1, H, W) saliency in [0, 1] at image resolution.

        Returns:
            Scalar loss, in float32 or wider.
        """
        _check_inputs(cams, labels, saliency)
        probs, saliency = _probabilities_and_saliency(cams, saliency)  # (B, C+1, h, w), (B, 1, h, w)
        foreground, background = eps_class_partition(probs, labels, saliency, self.tau)  # (B, C) each
        class_probs = probs[:, :-1]  # (B, C, h, w)
        foreground_map = (class_probs * foreground[:, :, None, None].to(probs.dtype)).sum(dim=1)  # (B, h, w)
        background_sum = (class_probs * background[:, :, None, None].to(probs.dtype)).sum(dim=1)  # (B, h, w)
        background_map = 1.0 - (probs[:, -1] + background_sum)  # (B, h, w)
        estimated = self.lam * foreground_map + (1.0 - self.lam) * background_map  # (B, h, w)
        return F.mse_loss(estimated, saliency[:, 0])

    def foreground_classes(self, cams: Tensor, labels: Tensor, saliency: Tensor) -> Tensor:
        """Which tagged classes ``forward`` treats as foreground (for logging; not differentiated).

        Args:
            cams: (B, C+1, h, w) raw class-map logits, the last channel background.
            labels: (B, C) multi-hot image tags.
            saliency: (B, H, W) or (B, 1, H, W) saliency in [0, 1].

        Returns:
            (B, C) bool; False for untagged classes.
        """
        _check_inputs(cams, labels, saliency)
        with torch.no_grad():
            probs, saliency = _probabilities_and_saliency(cams.detach(), saliency)
            foreground, _ = eps_class_partition(probs, labels, saliency, self.tau)
        return foreground

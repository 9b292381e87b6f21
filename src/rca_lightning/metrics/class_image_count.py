"""How many images of a split hold each class in their ground truth: what a per-class score covers."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric


class ClassImageCount(Metric):
    """The number of images whose ground truth holds each class (a pixel that is not ``ignore_index``).

    Summed over processes when the metric syncs, like the confusion matrices the IoU comes from.

    Args:
        num_labels: K labels, background included (0..K-1).
        ignore_index: ground-truth value that marks no class.
        kwargs: torchmetrics' ``Metric`` arguments (``process_group``, ``sync_on_compute``, ...).
    """

    full_state_update = False

    def __init__(self, num_labels: int, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.add_state("images", default=torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, target: torch.Tensor) -> None:
        """Accumulate a batch.

        Args:
            target: (B, H, W) ground truth, values 0..K-1 or ``ignore_index``.
        """
        labels = target.flatten(1).long()  # (B, H*W)
        ignored = labels == self.ignore_index
        if not bool(((labels >= 0) & (labels < self.num_labels) | ignored).all()):
            raise ValueError(f"target: expected values 0..{self.num_labels - 1} or {self.ignore_index}")
        labels = labels.masked_fill(ignored, self.num_labels)  # ignored pixels: an extra column, dropped
        present = torch.zeros(labels.shape[0], self.num_labels + 1, dtype=torch.bool, device=labels.device)
        present.scatter_(1, labels, True)  # (B, K + 1)
        self.images += present[:, : self.num_labels].sum(0)

    def compute(self) -> torch.Tensor:
        """(K,) images per class (a copy: later updates leave it as it is)."""
        return self.images.clone()

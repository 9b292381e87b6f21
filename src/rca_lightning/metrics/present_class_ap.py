"""Multi-label average precision of the classes a split holds: a class with no positive image has no AP."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torchmetrics.classification import MultilabelAveragePrecision

# What torchmetrics says for each class without a positive image; here such a class is NaN, not a warning.
_NO_POSITIVE_WARNING = "No positive samples found in target"


class PresentClassAveragePrecision(MultilabelAveragePrecision):
    """Per-class average precision, NaN for the classes with no positive image among those seen.

    torchmetrics' AP gives such a class 0, which drags a mean over all classes down (6 of 20 classes with
    AP 83.4 average 25.0). Here the count of positive images per class is a metric state of its own
    (``positives``, summed over the processes when the metric syncs, as the scores and targets are
    gathered), so the classes left out are the same under DDP as in one process. The mean over the classes
    present (``compute()["average_precision"].nanmean()``) leaves the others out, as mIoU leaves out the
    classes absent from prediction and ground truth.

    Args:
        num_labels: the C classes.
        kwargs: ``MultilabelAveragePrecision``'s other arguments (``thresholds``, ``ignore_index``,
            ``process_group``, ...), ``average`` excepted: the result is per class.
    """

    def __init__(self, num_labels: int, **kwargs: Any) -> None:
        if "average" in kwargs:
            raise ValueError(f"average={kwargs['average']!r}: the AP is per class; take the nanmean of it")
        super().__init__(num_labels=num_labels, average=None, **kwargs)
        self.add_state("positives", default=torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate a batch.

        Args:
            preds: (N, C) scores (probabilities, or logits that torchmetrics passes through a sigmoid).
            target: (N, C) 0 / 1 labels (``ignore_index`` entries are left out).
        """
        super().update(preds, target)
        self.positives += (target == 1).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        """``average_precision``: (C,) AP in [0, 1] of every class with a positive image, NaN for the others;
        ``positives``: (C,) the positive images per class, of every process (the states are unsynced after
        ``compute``, so read the counts here, not from the state)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_POSITIVE_WARNING)
            per_class = super().compute()
        positives = self.positives.clone()
        absent = torch.full_like(per_class, float("nan"))
        return {"average_precision": torch.where(positives > 0, per_class, absent), "positives": positives}

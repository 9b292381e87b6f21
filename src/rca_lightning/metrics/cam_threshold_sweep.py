"""CAM mIoU over a sweep of background thresholds, from one confusion matrix per threshold."""

from typing import Any

import torch
from torchmetrics import Metric

from rca_lightning.metrics.miou import iou_from_confusion


class CAMThresholdSweep(Metric):
    """Dataset-level confusion matrices of CAM predictions for every background threshold of a sweep.

    A pixel is predicted as its highest-scoring foreground class when that score exceeds the threshold,
    else as background (0). All thresholds are accumulated in one pass: each pixel's top score decides
    for which thresholds it is foreground, so the pixels are histogrammed once by that cut-off and the
    per-threshold matrices follow from prefix / suffix sums.

    Args:
        num_classes: foreground classes C (the matrices are (C+1) x (C+1), background first).
        thresholds: (T,) increasing background thresholds.
        ignore_index: ground-truth value left out of every matrix.
        kwargs: torchmetrics' ``Metric`` arguments (``process_group``, ``sync_on_compute``, ...).
    """

    full_state_update = False

    def __init__(
        self, num_classes: int, thresholds: torch.Tensor, ignore_index: int = 255, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        thresholds = torch.as_tensor(thresholds, dtype=torch.float32)
        if thresholds.ndim != 1 or not bool((thresholds[1:] > thresholds[:-1]).all()):
            raise ValueError(f"thresholds must be a 1-D increasing sequence, got {thresholds.tolist()}")
        self.num_labels = num_classes + 1
        self.ignore_index = ignore_index
        self.register_buffer("thresholds", thresholds, persistent=False)
        # Pixels by (number of thresholds below their top score, ground truth, top foreground class + 1).
        size = (len(thresholds) + 1, self.num_labels, self.num_labels)
        self.add_state("histogram", default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate a batch.

        Args:
            scores: (B, C, H, W) foreground CAM scores in [0, 1] (0 for classes not in the image).
            target: (B, H, W) ground truth, 0 = background, 1..C classes, ``ignore_index`` ignored.
        """
        if scores.shape[1] != self.num_labels - 1 or scores.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"scores (B, {self.num_labels - 1}, H, W) and target (B, H, W) expected, "
                f"got {tuple(scores.shape)} and {tuple(target.shape)}"
            )
        top_score, top_class = scores.max(dim=1)  # (B, H, W)
        keep = target != self.ignore_index
        cut = torch.searchsorted(self.thresholds, top_score[keep].float().contiguous(), side="left")
        index = (cut * self.num_labels + target[keep]) * self.num_labels + top_class[keep] + 1
        self.histogram += torch.bincount(index, minlength=self.histogram.numel()).view_as(self.histogram)

    def confusion_matrices(self) -> torch.Tensor:
        """(T, K, K) confusion matrices, rows ground truth, columns prediction."""
        # Threshold t predicts foreground for pixels whose cut > t, background for cut <= t.
        foreground = self.histogram.flip(0).cumsum(0).flip(0)[1:]  # (T, K, K): sum over cut > t
        background = self.histogram.sum(-1).cumsum(0)[:-1]  # (T, K): sum over cut <= t
        confusion = foreground.clone()
        confusion[..., 0] += background
        return confusion

    def compute(self) -> dict[str, torch.Tensor]:
        """Scores of the sweep: ``miou`` (T,), ``best_miou``, ``best_threshold``, ``best_iou`` (K,) and
        ``best_confusion`` (K, K), rows ground truth."""
        confusion = self.confusion_matrices()  # (T, K, K)
        iou = iou_from_confusion(confusion)  # (T, K)
        miou = iou.nanmean(-1)
        best = int(torch.nan_to_num(miou, nan=-1.0).argmax())
        return {
            "miou": miou,
            "best_miou": miou[best],
            "best_threshold": self.thresholds[best],
            "best_iou": iou[best],
            "best_confusion": confusion[best],
        }

"""Mean IoU from a dataset-level confusion matrix (the WSSS evaluation protocol)."""

import torch


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class IoU from confusion matrices.

    Args:
        confusion: (..., K, K) counts, rows = ground truth, columns = prediction.

    Returns:
        (..., K) float64 IoU = TP / (TP + FP + FN); NaN for a class absent from both prediction and ground
        truth, so that it is left out of the mean rather than counted as 0.
    """
    confusion = confusion.double()
    true_positive = confusion.diagonal(dim1=-2, dim2=-1)
    union = confusion.sum(-1) + confusion.sum(-2) - true_positive
    return torch.where(union > 0, true_positive / union.clamp_min(1), torch.full_like(union, float("nan")))


def miou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes present in prediction or ground truth: (..., K, K) -> (...)."""
    return iou_from_confusion(confusion).nanmean(-1)

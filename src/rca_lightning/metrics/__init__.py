"""Metrics: CAM mIoU over a sweep of background thresholds, and IoU / mIoU from one dataset-level confusion
matrix. Imports no other rca_lightning package."""

from rca_lightning.metrics.cam_threshold_sweep import CAMThresholdSweep
from rca_lightning.metrics.miou import iou_from_confusion, miou_from_confusion

__all__ = ["CAMThresholdSweep", "iou_from_confusion", "miou_from_confusion"]

"""Metrics: CAM mIoU over a sweep of background thresholds, IoU / mIoU from one dataset-level confusion
matrix, the images behind each class's score, and the average precision of the classes a split holds.
Imports no other rca_lightning package."""

from rca_lightning.metrics.cam_threshold_sweep import CAMThresholdSweep
from rca_lightning.metrics.class_image_count import ClassImageCount
from rca_lightning.metrics.miou import iou_from_confusion, miou_from_confusion
from rca_lightning.metrics.present_class_ap import PresentClassAveragePrecision

__all__ = [
    "CAMThresholdSweep",
    "ClassImageCount",
    "PresentClassAveragePrecision",
    "iou_from_confusion",
    "miou_from_confusion",
]

"""Losses: RCA's semantic contrast loss against the regional memory bank, the EPS saliency loss and
IRN's affinity loss (``losses.affinity_loss``). Imports only utils."""

from rca_lightning.losses.saliency_loss import EPSSaliencyLoss
from rca_lightning.losses.semantic_contrast import (
    SemanticContrastLoss,
    mixup_contrast_loss,
    per_class_contrast,
    sample_mixup,
)

__all__ = [
    "EPSSaliencyLoss",
    "SemanticContrastLoss",
    "mixup_contrast_loss",
    "per_class_contrast",
    "sample_mixup",
]

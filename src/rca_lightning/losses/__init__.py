"""Losses of RCA: the semantic contrast loss against the regional memory bank."""

from rca_lightning.losses.semantic_contrast import (
    SemanticContrastLoss,
    mixup_contrast_loss,
    per_class_contrast,
    sample_mixup,
)

__all__ = ["SemanticContrastLoss", "mixup_contrast_loss", "per_class_contrast", "sample_mixup"]

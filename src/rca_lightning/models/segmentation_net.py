"""Shared behaviour of the segmentation networks: parameter groups and frozen backbone normalisation."""

from __future__ import annotations

from torch import nn

from rca_lightning.models.parameter_groups import split_parameter_groups
from rca_lightning.utils.errors import InvalidSetting

# The batch-norm layers a backbone may hold (frozen or trained with the rest).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class SegmentationNet(nn.Module):
    """Base of the DeepLab networks: a ``backbone`` plus new layers predicting background + C classes.

    Args:
        backbone: the feature extractor (the pretrained part, 1x learning rate).
        num_classes: foreground classes C; the network predicts C + 1 maps, background first.
        freeze_backbone_norm: keep the backbone's batch-norm layers in eval mode with frozen affine
            parameters, as the DeepLab-v2 recipe does with its small batches (5 images per step).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, freeze_backbone_norm: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise InvalidSetting(f"num_classes: expected at least one foreground class, got {num_classes!r}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.freeze_backbone_norm = freeze_backbone_norm
        if freeze_backbone_norm:
            for norm in self._backbone_norms():
                norm.requires_grad_(False)

    @property
    def num_outputs(self) -> int:
        """Predicted maps: background + C foreground classes."""
        return self.num_classes + 1

    def _backbone_norms(self) -> list[nn.Module]:
        return [module for module in self.backbone.modules() if isinstance(module, BATCH_NORMS)]

    def train(self, mode: bool = True) -> SegmentationNet:
        super().train(mode)
        if self.freeze_backbone_norm:  # running statistics stay those of the pretrained weights
            for norm in self._backbone_norms():
                norm.eval()
        return self

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split for the recipe's learning rates (backbone 1x, new layers 10x).

        One-dimensional parameters (biases, normalisation weights) go to the ``*_bias`` lists, which by
        convention get no weight decay. Frozen parameters are left out.

        Returns:
            dict with keys ``backbone_weight``, ``backbone_bias``, ``new_weight``, ``new_bias``.
        """
        return split_parameter_groups(self, self.backbone)

"""DeepLab-v2: a dilated backbone (output stride 8) and an atrous spatial pyramid of class classifiers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rca_lightning.models.segmentation_net import SegmentationNet
from rca_lightning.utils.errors import InvalidSetting


class ASPPv2(nn.Module):
    """DeepLab-v2's atrous spatial pyramid: parallel dilated 3x3 classifiers whose outputs are summed.

    Args:
        in_channels: channels of the backbone features.
        num_outputs: predicted maps (background + classes).
        dilations: dilation (and padding) of each 3x3 branch; (6, 12, 18, 24) is DeepLab-v2's ASPP-L.
    """

    def __init__(
        self, in_channels: int, num_outputs: int, dilations: Sequence[int] = (6, 12, 18, 24)
    ) -> None:
        super().__init__()
        if not dilations:
            raise InvalidSetting("dilations: expected at least one dilation rate, got an empty list")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_outputs, kernel_size=3, padding=rate, dilation=rate)
            for rate in dilations
        )
        for branch in self.branches:  # the recipe's classifier initialisation
            nn.init.normal_(branch.weight, mean=0.0, std=0.01)
            nn.init.zeros_(branch.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (B, F, h, w). Returns: logits (B, K, h, w), the sum of the branches."""
        logits = self.branches[0](features)
        for branch in self.branches[1:]:  # a handful of rates, not a loop over images or classes
            logits = logits + branch(features)
        return logits


class DeepLabV2(SegmentationNet):
    """DeepLab-v2 (ASPP-L) on any backbone exposing ``out_channels`` (e.g. ``TimmBackbone``, stride 8).

    Args:
        backbone: feature extractor ``(B, 3, H, W) -> (B, F, H/os, W/os)`` with ``out_channels = F``.
        num_classes: foreground classes C; the network predicts C + 1 maps, background first.
        dilations: ASPP rates.
        freeze_backbone_norm: freeze the backbone's batch norms (see ``SegmentationNet``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        dilations: Sequence[int] = (6, 12, 18, 24),
        freeze_backbone_norm: bool = False,
    ) -> None:
        super().__init__(backbone, num_classes, freeze_backbone_norm)
        self.aspp = ASPPv2(backbone.out_channels, self.num_outputs, tuple(dilations))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: logits (B, C + 1, H, W), bilinearly upsampled."""
        features = self.backbone(images)  # (B, F, H/os, W/os)
        logits = self.aspp(features)  # (B, C + 1, H/os, W/os)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

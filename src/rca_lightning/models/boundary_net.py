"""IRN's boundary network: a class-agnostic boundary map at stride 4 from frozen backbone features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rca_lightning.models.multi_level_backbone import TimmMultiLevelBackbone


class BoundaryNet(nn.Module):
    """Every feature level of a frozen backbone -> 1x1 conv to ``level_channels`` (no bias) -> GroupNorm ->
    resampled to stride 4 (bilinear) -> ReLU; their concatenation -> 1x1 conv (with bias) -> one boundary
    logit per stride-4 pixel (IRN's boundary branch; its boundary probability is the sigmoid).

    The backbone is frozen whole (no gradients, batch-norm statistics kept: it stays in eval mode when the
    module trains), as IRN's, so only the level convolutions, norms and the head learn.

    Args:
        backbone: the frozen feature extractor (its maps, shallow to deep, and their ``level_channels``).
        level_channels: channels of each level after its 1x1 conv (IRN: 32).
        groups: GroupNorm groups (IRN: 4).
    """

    def __init__(self, backbone: TimmMultiLevelBackbone, level_channels: int = 32, groups: int = 4) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.levels = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, level_channels, 1, bias=False), nn.GroupNorm(groups, level_channels)
            )
            for channels in backbone.level_channels
        )
        self.head = nn.Conv2d(level_channels * len(self.levels), 1, 1)

    def train(self, mode: bool = True) -> BoundaryNet:
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics never move
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, ceil(H / 4), ceil(W / 4)) boundary logits."""
        size = (math.ceil(images.shape[-2] / 4), math.ceil(images.shape[-1] / 4))
        with torch.no_grad():
            features = self.backbone(images)  # every level, shallow to deep
        maps = [
            F.relu(F.interpolate(level(feature), size=size, mode="bilinear", align_corners=False))
            for level, feature in zip(self.levels, features, strict=True)  # the five levels, not images
        ]
        return self.head(torch.cat(maps, dim=1))[:, 0]


__all__ = ["BoundaryNet"]

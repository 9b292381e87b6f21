"""Projection of backbone features into the space of the contrast queries."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """conv3x3 + BatchNorm + ReLU + conv3x3, the release's projection of the raw ("mid") features.

    Args:
        in_channels: channels F of the backbone features.
        out_channels: channels P of the projection (hidden width too).
        conv_bias: give the first conv a bias, as the release does (``extra_F``: P parameters more). The
            BatchNorm after it subtracts the batch mean in training, so that bias changes no output there
            and gets no gradient; without it the BatchNorm's own bias is the only shift.
    """

    def __init__(self, in_channels: int, out_channels: int, conv_bias: bool = False) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=conv_bias),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (B, F, h, w). Returns: projected (B, P, h, w)."""
        return self.layers(features)

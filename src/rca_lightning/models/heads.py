"""Class-activation heads: one shared stack, or one stack per class run as grouped convolutions."""

from __future__ import annotations

import torch
from torch import nn

from rca_lightning.utils.errors import InvalidSetting


def _check_head_sizes(num_classes: int, width: int, depth: int) -> None:
    for setting, value in (("num_classes", num_classes), ("width", width)):
        if value < 1:
            raise InvalidSetting(f"{setting}: expected a positive integer, got {value}")
    if depth < 0:
        raise InvalidSetting(f"depth: expected a non-negative integer, got {depth}")


class ConvHead(nn.Module):
    """``depth`` x (conv3x3 ``width`` + ReLU), then conv1x1 -> ``num_classes`` maps.

    ``depth=0`` is a single conv1x1 classifier on the features (EPS's ``fc8``).

    Args:
        in_channels: channels F of the input features.
        num_classes: number of output maps C.
        width: channels of the hidden 3x3 convolutions (unused with ``depth=0``).
        depth: number of conv3x3 + ReLU blocks (>= 0).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int = 3) -> None:
        super().__init__()
        _check_head_sizes(num_classes, width, depth)
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.Conv2d(channels, num_classes, kernel_size=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (B, F, h, w). Returns: maps (B, C, h, w)."""
        return self.layers(features)


class PerClassHeads(nn.Module):
    """C independent ``ConvHead(in_channels, 1, width, depth)`` stacks, run at once with grouped convs.

    The first conv maps F -> C*width (output slice ``[c*width, (c+1)*width)`` is class c's own first conv);
    every later conv has ``groups=C``, so class c only ever sees its own slice; the final grouped 1x1 conv
    gives one map per class. This is exactly the release's C separate heads, without a loop over classes.
    With ``depth=0`` each class's stack is its own row of one conv1x1, the same as ``ConvHead(depth=0)``.

    Args:
        in_channels: channels F of the input features.
        num_classes: number of classes C (one stack each).
        width: hidden channels of each class's stack.
        depth: number of conv3x3 + ReLU blocks per stack (>= 0).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int = 3) -> None:
        super().__init__()
        _check_head_sizes(num_classes, width, depth)
        self.num_classes = num_classes
        self.width = width
        grouped_channels = num_classes * width
        if depth == 0:
            self.layers = nn.Sequential(nn.Conv2d(in_channels, num_classes, kernel_size=1))
            return
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, grouped_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for _ in range(depth - 1):
            layers += [
                nn.Conv2d(grouped_channels, grouped_channels, kernel_size=3, padding=1, groups=num_classes),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(grouped_channels, num_classes, kernel_size=1, groups=num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (B, F, h, w). Returns: maps (B, C, h, w), map c from class c's stack."""
        return self.layers(features)

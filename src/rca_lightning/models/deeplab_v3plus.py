"""DeepLab-v3+: ASPP with image pooling and batch norm on a stride-16 encoder, plus a stride-4 decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rca_lightning.models.segmentation_net import SegmentationNet

REFERENCE_OUTPUT_STRIDE = 16
DEFAULT_ASPP_DILATIONS = (6, 12, 18)  # at output stride 16; doubled at 8


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    """Bias-free convolution ('same' padding) + batch norm + ReLU."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPPv3(nn.Module):
    """DeepLab-v3's atrous spatial pyramid pooling: a 1x1 branch, dilated 3x3 branches and image pooling.

    The branches are concatenated and projected by a 1x1 conv + BN + ReLU (+ dropout).

    Args:
        in_channels: channels of the backbone features.
        out_channels: channels of each branch and of the output.
        dilations: rates of the 3x3 branches.
        dropout: dropout after the projection.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        dilations: Sequence[int] = DEFAULT_ASPP_DILATIONS,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels)]
            + [conv_bn_relu(in_channels, out_channels, 3, rate) for rate in dilations]
        )
        self.image_pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, out_channels))
        self.project = nn.Sequential(
            conv_bn_relu((len(dilations) + 2) * out_channels, out_channels), nn.Dropout(dropout)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (B, F, h, w). Returns: (B, out_channels, h, w)."""
        pooled = self.image_pooling(features).expand(-1, -1, *features.shape[-2:])  # (B, A, h, w)
        branches = [branch(features) for branch in self.branches] + [pooled]  # each (B, A, h, w)
        return self.project(torch.cat(branches, dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """Fuse upsampled ASPP features with reduced low-level features, then two 3x3 convs.

    Args:
        aspp_channels: channels of the ASPP output.
        low_level_in_channels: channels of the backbone's low-level map.
        low_level_channels: channels the low-level map is reduced to (48 in the paper).
        decoder_channels: channels of the 3x3 convs.
    """

    def __init__(
        self, aspp_channels: int, low_level_in_channels: int, low_level_channels: int, decoder_channels: int
    ) -> None:
        super().__init__()
        self.reduce_low_level = conv_bn_relu(low_level_in_channels, low_level_channels)
        self.fuse = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, decoder_channels, 3),
            conv_bn_relu(decoder_channels, decoder_channels, 3),
        )

    def forward(self, context: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        """Args: context (B, A, h, w), low_level (B, L, H/4, W/4). Returns: (B, D, H/4, W/4)."""
        context = F.interpolate(context, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([context, self.reduce_low_level(low_level)], dim=1))


class DeepLabV3Plus(SegmentationNet):
    """DeepLab-v3+ on a multi-level backbone (e.g. ``TimmMultiLevelBackbone``, output stride 16).

    Args:
        backbone: ``(B, 3, H, W) -> [maps, shallow to deep]`` whose map ``low_level_index`` is the low-level
            one (B, L, H/4, W/4) and whose last is (B, F, H/os, W/os), exposing ``low_level_index``,
            ``low_level_channels``, ``out_channels`` and ``output_stride``.
        num_classes: foreground classes C; the network predicts C + 1 maps, background first.
        aspp_channels: width of the ASPP branches.
        aspp_dilations: rates of the dilated ASPP branches; None: (6, 12, 18) scaled by 16 / output stride.
        low_level_channels: width of the reduced low-level features.
        decoder_channels: width of the decoder convs.
        dropout: dropout after the ASPP projection.
        freeze_backbone_norm: freeze the backbone's batch norms (see ``SegmentationNet``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        aspp_channels: int = 256,
        aspp_dilations: Sequence[int] | None = None,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
        freeze_backbone_norm: bool = False,
    ) -> None:
        super().__init__(backbone, num_classes, freeze_backbone_norm)
        if aspp_dilations is None:
            scale = REFERENCE_OUTPUT_STRIDE / getattr(backbone, "output_stride", REFERENCE_OUTPUT_STRIDE)
            aspp_dilations = tuple(max(1, round(rate * scale)) for rate in DEFAULT_ASPP_DILATIONS)
        self.aspp = ASPPv3(backbone.out_channels, aspp_channels, tuple(aspp_dilations), dropout)
        self.decoder = DeepLabV3PlusDecoder(
            aspp_channels, backbone.low_level_channels, low_level_channels, decoder_channels
        )
        self.classifier = nn.Conv2d(decoder_channels, self.num_outputs, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: logits (B, C + 1, H, W), bilinearly upsampled."""
        levels = self.backbone(images)  # shallow to deep
        low_level = levels[self.backbone.low_level_index]  # (B, L, H/4, W/4)
        high_level = levels[-1]  # (B, F, H/os, W/os)
        decoded = self.decoder(self.aspp(high_level), low_level)  # (B, D, H/4, W/4)
        logits = self.classifier(decoded)  # (B, C + 1, H/4, W/4)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

"""A timm feature extractor returning every feature map, shallow to deep, for encoder-decoders."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rca_lightning.models.backbone import create_timm_features
from rca_lightning.models.pretrained_weights import load_backbone_checkpoint
from rca_lightning.utils.errors import InvalidSetting


class TimmMultiLevelBackbone(nn.Module):
    """Every feature map of a timm model (``features_only=True``), for DeepLab-v3+ and IRN's boundary network.

    Holds the timm model as ``encoder`` and loads weights as :class:`~rca_lightning.models.TimmBackbone` does
    (``pretrained`` through huggingface_hub, ``checkpoint_path`` with ``strict=False``).

    Args:
        name: timm model name (``vgg16`` is not supported: it has no stride-16 variant).
        output_stride: input size / size of the deepest map: 8, 16 or 32 where timm supports it.
        pretrained: load timm's ImageNet weights (see ``TimmBackbone``).
        checkpoint_path: optional local weight file (see ``TimmBackbone``).
        low_level_stride: input size / size of the low-level map DeepLab-v3+'s decoder takes (the deepest map
            at that stride).

    Attributes:
        level_channels: channels of every map, shallow to deep.
        level_strides: input size / size of every map, shallow to deep (the last is ``output_stride``).
        low_level_index: index of the low-level map among the levels.
        low_level_channels: channels of the low-level map.
        out_channels: channels of the deepest map.
    """

    def __init__(
        self,
        name: str = "resnet18",
        output_stride: int = 16,
        pretrained: bool = False,
        checkpoint_path: str | Path | None = None,
        low_level_stride: int = 4,
    ) -> None:
        super().__init__()
        if name.startswith("vgg"):
            raise InvalidSetting(f"name: expected a timm backbone with multi-level features, got '{name}'")
        self.name = name
        self.output_stride = output_stride
        # A local file replaces the hub weights: build without them so nothing is downloaded.
        self.encoder = create_timm_features(name, output_stride, bool(pretrained) and checkpoint_path is None)
        self.level_channels = [int(c) for c in self.encoder.feature_info.channels()]
        self.level_strides = [int(r) for r in self.encoder.feature_info.reduction()]
        if low_level_stride not in self.level_strides:
            raise InvalidSetting(
                f"low_level_stride={low_level_stride} is not a feature stride of backbone '{name}'; "
                f"expected one of {sorted(set(self.level_strides))}"
            )
        self.low_level_index = max(i for i, r in enumerate(self.level_strides) if r == low_level_stride)
        self.low_level_channels = self.level_channels[self.low_level_index]
        self.out_channels = self.level_channels[-1]
        if checkpoint_path is not None:
            load_backbone_checkpoint(self.encoder, checkpoint_path, name)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Args: images (B, 3, H, W).

        Returns:
            every feature map, shallow to deep: level i is (B, level_channels[i], H / level_strides[i],
            W / level_strides[i]); level ``low_level_index`` is the low-level map, the last the deepest.
        """
        return list(self.encoder(images))


__all__ = ["TimmMultiLevelBackbone"]

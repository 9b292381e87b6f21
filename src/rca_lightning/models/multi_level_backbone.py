"""A timm feature extractor returning a low-level (fine) and a high-level (deep) feature map."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from rca_lightning.models.backbone import TIMM_OUTPUT_STRIDES, TimmBackbone, create_timm_model
from rca_lightning.utils.errors import InvalidSetting


class TimmMultiLevelBackbone(TimmBackbone):
    """Low-level and last feature maps of a timm model (``features_only=True``), for encoder-decoders.

    Shares ``TimmBackbone``'s weight loading (``pretrained`` from the local cache or the hub,
    ``checkpoint_path`` with ``strict=False``); only the returned maps differ.

    Args:
        name: timm model name (``vgg16`` is not supported: it has no stride-16 variant).
        output_stride: input size / size of the last map: 8, 16 or 32 where timm supports it.
        pretrained: load timm's ImageNet weights (see ``TimmBackbone``).
        checkpoint_path: optional local weight file (see ``TimmBackbone``).
        low_level_stride: input size / size of the low-level map (the deepest map at that stride).

    Attributes:
        out_channels: channels of the last map.
        low_level_channels: channels of the low-level map.
    """

    def __init__(
        self,
        name: str = "resnet18",
        output_stride: int = 16,
        pretrained: bool = False,
        checkpoint_path: str | Path | None = None,
        low_level_stride: int = 4,
    ) -> None:
        # TimmBackbone's constructor builds a last-map-only encoder; build a multi-level one instead.
        nn.Module.__init__(self)
        self.name = name
        self.output_stride = output_stride
        if not timm.is_model(name) or name.startswith("vgg"):
            raise InvalidSetting(f"name: expected a timm backbone with multi-level features, got '{name}'")
        unsupported = InvalidSetting(
            f"output_stride={output_stride} is not supported for backbone '{name}'; "
            f"allowed: {list(TIMM_OUTPUT_STRIDES)} where timm supports them"
        )
        if output_stride not in TIMM_OUTPUT_STRIDES:
            raise unsupported
        kwargs = {} if output_stride == 32 else {"output_stride": output_stride}
        pretrained = bool(pretrained) and checkpoint_path is None
        try:
            self.encoder = create_timm_model(name, pretrained, features_only=True, **kwargs)
        except (AssertionError, TypeError, NotImplementedError) as error:
            raise unsupported from error
        reductions = [int(r) for r in self.encoder.feature_info.reduction()]
        if reductions[-1] != output_stride:
            raise unsupported
        if low_level_stride not in reductions:
            raise InvalidSetting(
                f"low_level_stride={low_level_stride} is not a feature stride of backbone '{name}'; "
                f"expected one of {sorted(set(reductions))}"
            )
        self.low_level_index = max(i for i, r in enumerate(reductions) if r == low_level_stride)
        channels = self.encoder.feature_info.channels()
        self.low_level_channels = int(channels[self.low_level_index])
        self.out_channels = int(channels[-1])
        if checkpoint_path is not None:
            self.load_checkpoint(checkpoint_path)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: images (B, 3, H, W).

        Returns:
            low_level (B, low_level_channels, H/low_level_stride, W/low_level_stride) and
            high_level (B, out_channels, H/output_stride, W/output_stride).
        """
        features = self.encoder(images)  # list of maps, shallow to deep
        return features[self.low_level_index], features[-1]

    @property
    def level_channels(self) -> list[int]:
        """Channels of every feature level, shallow to deep."""
        return [int(c) for c in self.encoder.feature_info.channels()]

    def all_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every feature level of (B, 3, H, W) images, shallow to deep (timm's ``features_only`` maps)."""
        return list(self.encoder(images))

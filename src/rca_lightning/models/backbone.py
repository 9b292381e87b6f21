"""Feature extractors built from timm models.

A thin wrapper in the spirit of segmentation_models_pytorch's ``timm_universal`` encoder: timm builds the
network (``features_only=True``), this module exposes ``out_channels`` and returns the deepest feature map.
``vgg16`` is special-cased into the dilated network used by the public RCA/OAA release. Where the weights
come from (timm's through huggingface_hub, or a local file) is :mod:`rca_lightning.models.pretrained_weights`.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from rca_lightning.models.pretrained_weights import create_timm_model, load_backbone_checkpoint
from rca_lightning.utils.errors import InvalidSetting

VGG16_NAME = "vgg16"
VGG16_OUTPUT_STRIDES = (8,)
TIMM_OUTPUT_STRIDES = (8, 16, 32)


class DilatedVGGFeatures(nn.Module):
    """VGG-16 convolutional trunk with output stride 8, as in the public RCA/OAA code.

    The first three max-pools keep stride 2, the fourth becomes a 3x3 stride-1 pool, the conv5 block uses
    dilation 2 and the fifth pool is dropped. The ``features`` attribute keeps timm's (and torchvision's)
    layer indices, so ``features.N.weight`` keys of a VGG-16 checkpoint load directly.

    Args:
        features: timm ``vgg16().features`` (31 layers: 13 convs + ReLUs, 5 max-pools).
    """

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        pool_indices = [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
        if len(pool_indices) != 5 or pool_indices[-1] != len(features) - 1:
            raise ValueError(
                f"vgg16 features: expected 5 max-pools ending the stack, got pools at {pool_indices}"
            )
        fourth_pool, fifth_pool = pool_indices[3], pool_indices[4]
        layers = list(features.children())[:fifth_pool]  # drop the last pool; indices 0..29 are unchanged
        layers[fourth_pool] = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        for layer in layers[fourth_pool + 1 :]:
            if isinstance(layer, nn.Conv2d):  # conv5 block: keep the receptive field despite stride 8
                layer.dilation = (2, 2)
                layer.padding = (2, 2)
        self.features = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: (B, 512, H/8, W/8)."""
        return self.features(images)


class TimmBackbone(nn.Module):
    """Last feature map of a timm model at a chosen output stride.

    Args:
        name: timm model name, e.g. ``"resnet18"``, ``"resnet50"``, ``"resnet101"`` or ``"vgg16"``.
        output_stride: input size / feature size. 8, 16 or 32 where timm supports it; ``vgg16``: 8 only.
        pretrained: load timm's ImageNet weights through huggingface_hub (its cache, else the hub; with
            ``HF_HUB_OFFLINE=1`` the cache only); weights neither cached nor downloadable raise
            ``PretrainedWeightsUnavailableError`` (see :mod:`rca_lightning.models.pretrained_weights`).
        checkpoint_path: optional local weight file (``torch.save`` state dict, possibly nested under
            ``"state_dict"`` or ``"model"``, or ``.safetensors``) loaded with ``strict=False``; missing and
            unexpected keys are reported with ``warnings.warn``. Given a file, the hub is never contacted
            (``pretrained`` is then ignored). timm and torchvision key names both load: ResNet keys are the
            same in both, VGG-16 ``features.N.*`` keys are the same and the classifier keys (unused by a
            feature extractor) are reported as unexpected. A ``module.``, ``encoder.`` or ``backbone.``
            prefix is stripped.

    Attributes:
        out_channels: channels of the returned feature map.
        output_stride: input size / feature size.
    """

    def __init__(
        self,
        name: str = "resnet18",
        output_stride: int = 16,
        pretrained: bool = False,
        checkpoint_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.output_stride = output_stride
        # A local file replaces the hub weights: build without them so nothing is downloaded.
        pretrained = bool(pretrained) and checkpoint_path is None
        if name == VGG16_NAME:
            if output_stride not in VGG16_OUTPUT_STRIDES:
                raise InvalidSetting(
                    f"output_stride={output_stride} is not supported for backbone '{name}'; "
                    f"allowed: {list(VGG16_OUTPUT_STRIDES)}"
                )
            self.encoder: nn.Module = DilatedVGGFeatures(create_timm_model(name, pretrained).features)
            self.out_channels = 512
        else:
            self.encoder = create_timm_features(name, output_stride, pretrained, out_indices=(-1,))
            self.out_channels = int(self.encoder.feature_info.channels()[-1])
        if checkpoint_path is not None:
            load_backbone_checkpoint(self.encoder, checkpoint_path, name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: features (B, out_channels, H/os, W/os)."""
        features = self.encoder(images)  # timm features_only models return a list of maps
        return features[-1] if isinstance(features, list | tuple) else features


def create_timm_features(
    name: str, output_stride: int, pretrained: bool, out_indices: tuple[int, ...] | None = None
) -> nn.Module:
    """``timm.create_model(features_only=True)`` at ``output_stride``, checked to honour it.

    Args:
        name: timm model name.
        output_stride: input size / size of the deepest map: 8, 16 or 32 where timm supports it.
        pretrained: load timm's pretrained weights (see ``create_timm_model``).
        out_indices: the feature levels to return; None: every level.
    """
    if not timm.is_model(name):
        raise InvalidSetting(f"name: unknown timm backbone '{name}'; expected a name of timm.list_models()")
    unsupported = InvalidSetting(
        f"output_stride={output_stride} is not supported for backbone '{name}'; "
        f"allowed: {list(TIMM_OUTPUT_STRIDES)} where timm supports them"
    )
    if output_stride not in TIMM_OUTPUT_STRIDES:
        raise unsupported
    kwargs = {} if output_stride == 32 else {"output_stride": output_stride}
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    try:
        encoder = create_timm_model(name, pretrained, features_only=True, **kwargs)
    except (AssertionError, TypeError, NotImplementedError) as error:
        raise unsupported from error
    if int(encoder.feature_info.reduction()[-1]) != output_stride:  # models that ignore output_stride
        raise unsupported
    return encoder

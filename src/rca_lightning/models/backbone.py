"""Feature extractors built from timm models.

A thin wrapper in the spirit of segmentation_models_pytorch's ``timm_universal`` encoder: timm builds the
network (``features_only=True``), this module exposes ``out_channels`` and returns the deepest feature map.
``vgg16`` is special-cased into the dilated network used by the public RCA/OAA release.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput, UserError
from rca_lightning.utils.network import server_reachable

VGG16_NAME = "vgg16"
VGG16_OUTPUT_STRIDES = (8,)
TIMM_OUTPUT_STRIDES = (8, 16, 32)
_MAX_KEYS_IN_WARNING = 10
# Where a classifier's backbone weights sit in an rca-train checkpoint's state dict (LitModule.net.backbone).
CLASSIFIER_BACKBONE_PREFIX = "net.backbone."
HUB_PROBE_TIMEOUT_S = 3.0
_HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class PretrainedWeightsUnavailableError(UserError, RuntimeError):
    """``pretrained=True`` but the weights are neither cached locally nor downloadable."""


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
        pretrained: load timm's ImageNet weights: from the local Hugging Face cache when they are there
            (no network access), else from the hub. Offline with nothing cached raises
            ``PretrainedWeightsUnavailableError`` within seconds (no download retries).
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
            self.encoder = _create_timm_features(name, output_stride, pretrained)
            self.out_channels = int(self.encoder.feature_info.channels()[-1])
        if checkpoint_path is not None:
            self.load_checkpoint(checkpoint_path)

    def load_checkpoint(self, checkpoint_path: str | Path) -> tuple[list[str], list[str]]:
        """Load a local state dict into the timm model with ``strict=False``.

        Args:
            checkpoint_path: file written by ``torch.save`` (a dict nested under ``"state_dict"`` or
                ``"model"`` is unwrapped; of an ``rca-train`` checkpoint, only its network's backbone is
                read) or a ``.safetensors`` file.

        Returns:
            (missing_keys, unexpected_keys), also reported with ``warnings.warn`` when non-empty.
        """
        path = Path(checkpoint_path)
        if not path.is_file():
            raise MissingInput(f"checkpoint_path: {path} not found: expected a backbone weight file")
        state = _read_state_dict(path)
        for nested_key in ("state_dict", "model"):
            if isinstance(state, Mapping) and isinstance(state.get(nested_key), Mapping):
                state = state[nested_key]
        if not isinstance(state, Mapping):
            raise InvalidData(
                f"checkpoint_path: {path} holds a {type(state).__name__}, expected a state dict"
            )
        if any(key.startswith(CLASSIFIER_BACKBONE_PREFIX) for key in state):  # an rca-train checkpoint
            state = {
                key[len(CLASSIFIER_BACKBONE_PREFIX) :]: value
                for key, value in state.items()
                if key.startswith(CLASSIFIER_BACKBONE_PREFIX)
            }
        state = {_strip_prefixes(key): value for key, value in state.items()}
        expected = self.encoder.state_dict()
        if not expected.keys() & state.keys():
            raise InvalidData(
                f"checkpoint_path: none of the {len(state)} keys of {path} "
                f"(e.g. {_preview(list(state)[:3])}) match backbone '{self.name}' "
                f"(e.g. {_preview(list(expected)[:3])}); expected timm or torchvision "
                "weights of that architecture"
            )
        wrong_shapes = [
            f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
            for key in expected.keys() & state.keys()
            if tuple(state[key].shape) != tuple(expected[key].shape)
        ]
        if wrong_shapes:
            raise InvalidData(
                f"checkpoint_path: {path} has {len(wrong_shapes)} tensors whose shape differs from backbone "
                f"'{self.name}', first: {sorted(wrong_shapes)[0]}"
            )
        result = self.encoder.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if missing or unexpected:
            warnings.warn(
                f"backbone checkpoint {path}: {len(missing)} missing keys {_preview(missing)}, "
                f"{len(unexpected)} unexpected keys {_preview(unexpected)}",
                stacklevel=2,
            )
        return missing, unexpected

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: features (B, out_channels, H/os, W/os)."""
        features = self.encoder(images)  # timm features_only models return a list of maps
        return features[-1] if isinstance(features, list | tuple) else features


def create_timm_model(name: str, pretrained: bool, **kwargs) -> nn.Module:
    """``timm.create_model`` that never waits on an unreachable hub.

    With ``pretrained=True`` the weights come from the local Hugging Face cache when they are there
    (loaded as a local file: no network access at all); otherwise the hub must be reachable. Offline
    (``HF_HUB_OFFLINE=1``, or a TCP probe of the hub failing within ``HUB_PROBE_TIMEOUT_S``) with nothing
    cached raises ``PretrainedWeightsUnavailableError`` at once instead of timm's ~50 s of retries.

    Args:
        name: timm model name.
        pretrained: load timm's default pretrained weights of ``name``.
        **kwargs: passed to ``timm.create_model`` (``features_only``, ``output_stride``...).
    """
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    hub_id = pretrained_cfg.hf_hub_id if pretrained_cfg is not None else None
    cached = _cached_hub_file(hub_id)
    if cached is not None:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs)
    if not _hub_reachable():
        raise PretrainedWeightsUnavailableError(
            _weights_unavailable_message(name, hub_id, "the hub is unreachable (offline)")
        )
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as error:  # hub, HTTP and connection errors are all OSError subclasses
        raise PretrainedWeightsUnavailableError(
            _weights_unavailable_message(name, hub_id, f"download failed: {type(error).__name__}")
        ) from error


def _weights_unavailable_message(name: str, hub_id: str | None, reason: str) -> str:
    return (
        f"pretrained=true: no ImageNet weights for backbone '{name}' ({hub_id or 'no hub id'}): not in the "
        f"local Hugging Face cache and {reason}; set model.net.backbone.checkpoint_path=FILE (a local timm "
        "or torchvision state dict, see docs/real-data.md) or pretrained=false"
    )


def _cached_hub_file(hub_id: str | None) -> str | None:
    """Path of the cached hub weight file of ``hub_id`` (``"timm/resnet50.a1_in1k"``), if cached."""
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = hub_id.partition("@")
    for filename in _HUB_WEIGHT_FILES:
        cached = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(cached, str) and os.path.isfile(cached):
            return cached
    return None


def _hub_reachable() -> bool:
    """False when offline mode is set or the hub's host does not accept a TCP connection quickly."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and server_reachable(constants.ENDPOINT, HUB_PROBE_TIMEOUT_S)


def _read_state_dict(path: Path) -> object:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip, safetensors and weights_only errors have no common base class
        reason = " ".join(str(error).split())
        raise InvalidData(f"checkpoint_path: cannot read {path} as a torch state dict ({reason})") from error


def _create_timm_features(name: str, output_stride: int, pretrained: bool) -> nn.Module:
    """Build ``timm.create_model(features_only=True)`` and check that the stride was honoured."""
    if not timm.is_model(name):
        raise InvalidSetting(f"name: unknown timm backbone '{name}'; expected a name of timm.list_models()")
    unsupported = InvalidSetting(
        f"output_stride={output_stride} is not supported for backbone '{name}'; "
        f"allowed: {list(TIMM_OUTPUT_STRIDES)} where timm supports them"
    )
    if output_stride not in TIMM_OUTPUT_STRIDES:
        raise unsupported
    kwargs = {} if output_stride == 32 else {"output_stride": output_stride}
    try:
        encoder = create_timm_model(name, pretrained, features_only=True, out_indices=(-1,), **kwargs)
    except (AssertionError, TypeError, NotImplementedError) as error:
        raise unsupported from error
    if int(encoder.feature_info.reduction()[-1]) != output_stride:  # models that ignore output_stride
        raise unsupported
    return encoder


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "encoder.", "backbone."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _preview(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_KEYS_IN_WARNING} more)" if len(keys) > _MAX_KEYS_IN_WARNING else ""
    return f"{keys[:_MAX_KEYS_IN_WARNING]}{more}"

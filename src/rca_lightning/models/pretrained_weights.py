"""Where a backbone's weights come from: timm's pretrained weights through huggingface_hub, or a local file.

``pretrained=True`` is timm's own download, through huggingface_hub and its cache: offline
(``HF_HUB_OFFLINE=1``) only the cache is read; online huggingface_hub checks the cached copy against the hub
and falls back to it when the hub does not answer. Weights that are neither cached nor downloadable end in
one line, :class:`PretrainedWeightsUnavailableError`, asking for a local file (``checkpoint_path``), which
:func:`load_backbone_checkpoint` reads without contacting the hub.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from torch import nn

from rca_lightning.utils.errors import InvalidData, MissingInput, UserError

# Where a classifier's backbone weights sit in an rca-train checkpoint's state dict (LitModule.net.backbone).
CLASSIFIER_BACKBONE_PREFIX = "net.backbone."
_MAX_KEYS_IN_WARNING = 10


class PretrainedWeightsUnavailableError(UserError, RuntimeError):
    """``pretrained=True`` but the weights are neither cached locally nor downloadable."""


def create_timm_model(name: str, pretrained: bool, **kwargs) -> nn.Module:
    """``timm.create_model`` whose missing pretrained weights end in one line.

    huggingface_hub's errors when the weights are not in its cache and cannot be downloaded become
    :class:`PretrainedWeightsUnavailableError`: ``LocalEntryNotFoundError`` (offline mode, or the hub not
    reachable; without ``HF_HUB_OFFLINE=1`` after huggingface_hub's own retries) and ``OfflineModeIsEnabled``
    as "the hub is unreachable (offline)", any other ``HfHubHTTPError`` (repository not found, gated, server
    errors) as "download failed".

    Args:
        name: timm model name.
        pretrained: load timm's default pretrained weights of ``name``.
        **kwargs: passed to ``timm.create_model`` (``features_only``, ``output_stride``...).
    """
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        reason = "the hub is unreachable (offline)"
        raise PretrainedWeightsUnavailableError(_weights_unavailable_message(name, reason)) from error
    except HfHubHTTPError as error:
        reason = f"download failed: {type(error).__name__}"
        raise PretrainedWeightsUnavailableError(_weights_unavailable_message(name, reason)) from error


def _weights_unavailable_message(name: str, reason: str) -> str:
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    hub_id = pretrained_cfg.hf_hub_id if pretrained_cfg is not None else None
    return (
        f"pretrained=true: no ImageNet weights for backbone '{name}' ({hub_id or 'no hub id'}): not in the "
        f"local Hugging Face cache and {reason}; set model.net.backbone.checkpoint_path=FILE (a local timm "
        "or torchvision state dict, see docs/real-data.md) or pretrained=false"
    )


def load_backbone_checkpoint(
    encoder: nn.Module, checkpoint_path: str | Path, backbone_name: str
) -> tuple[list[str], list[str]]:
    """Load a local state dict into a backbone's timm model with ``strict=False``.

    Args:
        encoder: the timm model (or the dilated VGG-16 trunk) the weights are for.
        checkpoint_path: file written by ``torch.save`` (a dict nested under ``"state_dict"`` or
            ``"model"`` is unwrapped; of an ``rca-train`` checkpoint, only its network's backbone is
            read) or a ``.safetensors`` file. A ``module.``, ``encoder.`` or ``backbone.`` prefix is stripped.
        backbone_name: the timm name, for the messages.

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
        raise InvalidData(f"checkpoint_path: {path} holds a {type(state).__name__}, expected a state dict")
    if any(key.startswith(CLASSIFIER_BACKBONE_PREFIX) for key in state):  # an rca-train checkpoint
        state = {
            key[len(CLASSIFIER_BACKBONE_PREFIX) :]: value
            for key, value in state.items()
            if key.startswith(CLASSIFIER_BACKBONE_PREFIX)
        }
    state = {_strip_prefixes(key): value for key, value in state.items()}
    expected = encoder.state_dict()
    if not expected.keys() & state.keys():
        raise InvalidData(
            f"checkpoint_path: none of the {len(state)} keys of {path} "
            f"(e.g. {_preview(list(state)[:3])}) match backbone '{backbone_name}' "
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
            f"'{backbone_name}', first: {sorted(wrong_shapes)[0]}"
        )
    result = encoder.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        warnings.warn(
            f"backbone checkpoint {path}: {len(missing)} missing keys {_preview(missing)}, "
            f"{len(unexpected)} unexpected keys {_preview(unexpected)}",
            stacklevel=3,
        )
    return missing, unexpected


def _read_state_dict(path: Path) -> object:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip, safetensors and weights_only errors have no common base class
        reason = " ".join(str(error).split())
        raise InvalidData(f"checkpoint_path: cannot read {path} as a torch state dict ({reason})") from error


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "encoder.", "backbone."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _preview(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_KEYS_IN_WARNING} more)" if len(keys) > _MAX_KEYS_IN_WARNING else ""
    return f"{keys[:_MAX_KEYS_IN_WARNING]}{more}"


__all__ = ["PretrainedWeightsUnavailableError", "create_timm_model", "load_backbone_checkpoint"]

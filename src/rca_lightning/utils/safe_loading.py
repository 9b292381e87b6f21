"""Reading what a user points at without running code from it: checkpoints and run-folder configs.

A checkpoint is a pickle, and unpickling can call any function the file names; a run folder's
``.hydra/config.yaml`` names classes by ``_target_``, and instantiating it calls them. Both are data the
user points at (``ckpt_path=``, ``train_dir=``, a pipeline folder), so both are read here, strictly.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from rca_lightning.utils.errors import InvalidData, MissingInput
from rca_lightning.utils.resolvers import register_resolvers

# Packages whose classes a run-folder config may build: this project, and the libraries its own configs
# and models are built from (optimisers, backbones, trainer, callbacks and loggers, metrics, augmentations).
ALLOWED_TARGET_PACKAGES = ("rca_lightning", "torch", "timm", "lightning", "torchmetrics", "albumentations")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# How torch's weights-only unpickler names the global it refused.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a Lightning checkpoint with ``torch.load(weights_only=True)``.

    The weights-only unpickler builds tensors, storages and plain containers and values only; nothing the
    file names is called. That is all the project's checkpoints hold (model and callback states are
    tensors, hyperparameters plain values), so no global is allow-listed beyond torch's own list.

    Args:
        path: the checkpoint file.
        map_location: where tensors are put (``torch.load``'s ``map_location``).

    Returns:
        The checkpoint: a dict with at least a ``state_dict`` entry.

    Raises:
        InvalidData: the file holds anything else (a pickled object or function, which is never
            called), is not a torch file, or is not a Lightning checkpoint. The message names the file.
        MissingInput: there is no such file.
    """
    expected = "expected a checkpoint written by rca-lightning"
    if not Path(path).is_file():
        raise MissingInput(f"{path} not found: {expected}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _REFUSED_GLOBAL.search(str(error))
        if refused:
            raise InvalidData(
                f"{path}: refuses to unpickle {refused.group(1)} (weights_only=True); {expected}"
            ) from error
        unpickler_reason = _UNPICKLER_REASON.search(str(error))
        reason = unpickler_reason.group(1) if unpickler_reason else "the weights-only unpickler refused it"
        raise InvalidData(f"{path}: not a readable torch checkpoint ({reason}); {expected}") from error
    except (RuntimeError, EOFError, KeyError) as error:  # what torch raises on a file it cannot parse
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InvalidData(f"{path}: not a readable torch checkpoint ({reason}); {expected}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InvalidData(f"{path}: expected a Lightning checkpoint with a 'state_dict' entry")
    return checkpoint


def check_config_targets(cfg: DictConfig | ListConfig, source_path: str | Path) -> None:
    """Refuse a config that would build anything but classes of ``ALLOWED_TARGET_PACKAGES``.

    Every ``_target_`` in the config, at any depth (lists included), must be a plain dotted name (not an
    interpolation) in one of those packages, and must name a class defined there: a name inside an
    allowed package can still reach a function or another package (``rca_lightning.cli.pipeline.os.system``),
    and functions such as ``torch.load`` run code from files. Only modules of the allowed packages are
    imported to look the names up.

    Args:
        cfg: the loaded config, not yet instantiated.
        source_path: the file it was read from, named in the error.

    Raises:
        InvalidData: one line naming the file, the key path and the target.
    """
    for key_path, target in _targets(OmegaConf.to_container(cfg, resolve=False), ""):
        where = f"{source_path}: {key_path}._target_={target!r}"
        if not isinstance(target, str) or not _DOTTED_NAME.fullmatch(target):
            raise InvalidData(f"{where} is not a plain dotted class name")
        if target.split(".", 1)[0] not in ALLOWED_TARGET_PACKAGES:
            raise InvalidData(f"{where} is outside the allowed packages {list(ALLOWED_TARGET_PACKAGES)}")
        try:
            located = get_object(target)
        except Exception as error:  # import and attribute errors of the lookup have no common base class
            raise InvalidData(f"{where} cannot be looked up ({' '.join(str(error).split())})") from error
        defined_in = getattr(located, "__module__", None) or ""
        if not isinstance(located, type) or defined_in.split(".", 1)[0] not in ALLOWED_TARGET_PACKAGES:
            raise InvalidData(
                f"{where} is {type(located).__name__} {defined_in}.{getattr(located, '__qualname__', '')}; "
                f"expected a class defined in {list(ALLOWED_TARGET_PACKAGES)}"
            )


def load_run_config(path: str | Path) -> DictConfig:
    """A run folder's saved config (``<run>/.hydra/config.yaml``), checked by ``check_config_targets``,
    with the project's resolvers registered (its interpolations use them)."""
    register_resolvers()
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # YAML syntax and OmegaConf errors have no common base class
        reason = " ".join(str(error).split())
        raise InvalidData(
            f"{path}: not a readable YAML config ({reason}); expected a Hydra run config"
        ) from error
    check_config_targets(cfg, path)
    return cfg


def _targets(node: Any, key_path: str) -> list[tuple[str, Any]]:
    """(key path, target) of every ``_target_`` in a plain container, outermost first."""
    if isinstance(node, dict):
        found = [(key_path or "<root>", node["_target_"])] if "_target_" in node else []
        for key, value in node.items():
            found += _targets(value, f"{key_path}.{key}" if key_path else str(key))
        return found
    if isinstance(node, list):
        return [
            found for index, value in enumerate(node) for found in _targets(value, f"{key_path}[{index}]")
        ]
    return []


__all__ = ["ALLOWED_TARGET_PACKAGES", "check_config_targets", "load_checkpoint", "load_run_config"]

"""Reading what a user points at without running code from it: checkpoints and run-folder configs.

A checkpoint is a pickle, and unpickling can call any function the file names; a run folder's
``.hydra/config.yaml`` names classes by ``_target_``, and instantiating it calls them. Both are data the
user points at (``ckpt_path=``, ``train_dir=``, a pipeline folder), so both are read here, strictly: a
config may build only the classes the shipped configs build (:mod:`rca_lightning.utils.allowed_targets`)
and those the user names on the command line (``trusted_targets=[...]``), checked on the tree that is built.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.resolvers import oc

from rca_lightning.utils.allowed_targets import ALLOWED_TARGETS
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from rca_lightning.utils.resolvers import register_resolvers, sqlite_url

_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# How torch's weights-only unpickler names the global it refused.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")
# Resolvers that reach beyond the config (``sqlite_url`` creates a folder, ``oc.env`` reads the environment):
# a foreign config's node is resolved without them. Its class names, sizes and references need neither.
_RESOLVERS_WITH_EFFECTS = {"sqlite_url": sqlite_url, "oc.env": oc.env}


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


def trusted_target_names(names: Iterable[str] | None) -> frozenset[str]:
    """The ``trusted_targets`` setting as a set of names: classes the user trusts beyond ``ALLOWED_TARGETS``.

    Args:
        names: the setting (a list of dotted class names, e.g. ``[my_package.models.MyNet]``), or None.

    Raises:
        InvalidSetting: it is not a list of dotted names.
    """
    if names is None:
        return frozenset()
    if OmegaConf.is_config(names):
        names = OmegaConf.to_container(names)
    is_list = isinstance(names, (list, tuple, set, frozenset))
    if not is_list or not all(isinstance(name, str) and _DOTTED_NAME.fullmatch(name) for name in names):
        raise InvalidSetting(
            f"trusted_targets={names!r}: expected a list of dotted class names, e.g. [my_package.MyNet]"
        )
    return frozenset(names)


def check_config_targets(
    tree: Any, source_path: str | Path, trusted_targets: Iterable[str] = (), key_path: str = ""
) -> None:
    """Refuse a resolved config tree that would build anything but ``ALLOWED_TARGETS`` or ``trusted_targets``.

    ``tree`` is the tree ``instantiate`` is given, resolved (plain dicts, lists and values, as
    ``OmegaConf.to_container(resolve=True)`` returns it), so that a node an interpolation creates
    (``${oc.create:...}``, ``${oc.decode:...}``) is checked too. Every ``_target_`` at any depth (lists and
    ``_args_`` included) must be one of those names exactly, as written: nothing is imported to compare
    it. A ``_partial_`` node of an allowed class is allowed (every allowed name is a class). A string that
    still holds ``${`` would become an interpolation again when the tree is made a config, and is refused.

    Args:
        tree: the resolved tree.
        source_path: the file it was read from, named in the error.
        trusted_targets: class names the user trusts (the ``trusted_targets`` setting).
        key_path: the dotted key of ``tree`` in its file, named in the error.

    Raises:
        InvalidData: one line naming the file, the key path and the target.
    """
    allowed = ALLOWED_TARGETS | trusted_target_names(trusted_targets)
    interpolation = next(iter(_leaves_holding_interpolations(tree, key_path)), None)
    if interpolation is not None:
        path, value = interpolation
        raise InvalidData(
            f"{source_path}: {path}={value!r} resolves to another interpolation; expected plain values"
        )
    for path, target in _targets(tree, key_path):
        if not isinstance(target, str) or target not in allowed:
            raise InvalidData(
                f"{source_path}: {path}._target_={target!r} is not a class the shipped configs build; "
                "expected one of those, or a class named on the command line (trusted_targets=[...])"
            )


def run_config_keys(path: str | Path) -> frozenset[str]:
    """The top-level keys of a run folder's saved config (which networks it holds), nothing resolved."""
    return frozenset(str(key) for key in _read_run_config(path))


def load_run_config(path: str | Path, node: str, trusted_targets: Iterable[str] = ()) -> DictConfig:
    """``node`` of a run folder's saved config (``<run>/.hydra/config.yaml``), resolved and checked by
    ``check_config_targets``: the config to instantiate.

    The node is resolved once, with the project's resolvers registered (its interpolations, such as
    ``${len:${data.class_names}}``, use them and the rest of the file); the tree returned is the one that was
    checked, free of interpolations, so nothing is resolved again when it is built.

    Args:
        path: the config file.
        node: its entry that will be built (``model``, ``seg_model``).
        trusted_targets: classes the user trusts beyond ``ALLOWED_TARGETS`` (the ``trusted_targets`` setting;
            never read from the folder).

    Raises:
        InvalidData: the file is not YAML, has no mapping ``node``, cannot be resolved, or builds another
            class; one line naming the file.
    """
    register_resolvers()
    cfg = _read_run_config(path)
    expected = f"expected a Hydra run config with the '{node}' settings"
    try:
        value = cfg[node] if node in cfg else None
        with _resolvers_without_effects():
            tree = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_dict(value) else value
    except OmegaConfBaseException as error:  # resolver errors arrive wrapped in OmegaConf's
        reason = " ".join(str(error).split())
        raise InvalidData(f"{path}: {node} cannot be resolved ({reason}); {expected}") from error
    if not isinstance(tree, dict):
        raise InvalidData(f"{path}: {node} is {type(tree).__name__}; {expected}")
    check_config_targets(tree, path, trusted_targets, node)
    return OmegaConf.create(tree)


@contextmanager
def _resolvers_without_effects() -> Iterator[None]:
    """While a foreign node is resolved, the resolvers of ``_RESOLVERS_WITH_EFFECTS`` refuse to run (the
    refusal surfaces as an OmegaConf resolution error naming the key); they are put back afterwards."""

    def refuse(*_: Any) -> None:
        raise ValueError("this resolver reaches beyond the config and is not run for a run folder's config")

    for name in _RESOLVERS_WITH_EFFECTS:
        OmegaConf.register_new_resolver(name, refuse, replace=True)
    try:
        yield
    finally:
        for name, resolver in _RESOLVERS_WITH_EFFECTS.items():
            OmegaConf.register_new_resolver(name, resolver, replace=True)


def _read_run_config(path: str | Path) -> DictConfig:
    """The saved config as YAML, unresolved; InvalidData naming the file when it is not a YAML mapping."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # YAML syntax and OmegaConf errors have no common base class
        reason = " ".join(str(error).split())
        raise InvalidData(
            f"{path}: not a readable YAML config ({reason}); expected a Hydra run config"
        ) from error
    if not isinstance(cfg, DictConfig):
        raise InvalidData(f"{path}: holds a list; expected a Hydra run config (a mapping)")
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


def _leaves_holding_interpolations(node: Any, key_path: str) -> list[tuple[str, str]]:
    """(key path, value) of every string in a plain container that holds ``${``."""
    if isinstance(node, dict):
        items = [(f"{key_path}.{key}" if key_path else str(key), value) for key, value in node.items()]
    elif isinstance(node, list):
        items = [(f"{key_path}[{index}]", value) for index, value in enumerate(node)]
    else:
        return [(key_path, node)] if isinstance(node, str) and "${" in node else []
    return [found for path, value in items for found in _leaves_holding_interpolations(value, path)]


__all__ = [
    "check_config_targets",
    "load_checkpoint",
    "load_run_config",
    "run_config_keys",
    "trusted_target_names",
]

"""Which keys of composed configs the code reads: a recorder of OmegaConf reads, and the keys a config holds.

A key counts as read when code gets its node (attribute, item, ``get``, iteration, instantiation, conversion
of the node or of one of its parents to a container); a mapping consulted with ``in`` counts as read whole (a
lookup table, such as the pipeline's ``seg_recipes``). Converting or saving a *whole* config (logging it as
hyper-parameters, writing ``.hydra/config.yaml``) reads nothing: that copies the config, it does not use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections import defaultdict
from collections.abc import Iterator

from hydra._internal.hydra import Hydra
from hydra.utils import get_object
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.basecontainer import BaseContainer
from torch.nn.parallel import DistributedDataParallel

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# Targets whose ``**kwargs`` go to another callable than their base classes: Lightning's DDPStrategy hands
# them to torch's DistributedDataParallel.
KEYWORDS_HANDED_TO = {DDPStrategy: DistributedDataParallel}


def root_of(node) -> object:
    while node._get_parent() is not None:
        node = node._get_parent()
    return node


class ConfigReads:
    """Records, per root config object, the full keys read while it is active (a context manager)."""

    def __init__(self) -> None:
        self.reads: dict[int, set[str]] = defaultdict(set)
        self.paused = 0
        self.busy = False
        self.patches = contextlib.ExitStack()

    def record(self, container, key) -> None:
        if self.paused or self.busy:
            return
        self.busy = True
        try:
            full_key = container._get_full_key(key)
            self.reads[id(root_of(container))].add(str(full_key))

        except Exception:  # noqa: BLE001 (a key OmegaConf itself cannot name: not one of ours)
            pass
        finally:
            self.busy = False

    def __enter__(self) -> ConfigReads:
        recorder = self
        get_node, contains = DictConfig._get_node, DictConfig.__contains__
        to_container, to_yaml, save = OmegaConf.to_container, OmegaConf.to_yaml, OmegaConf.save

        def recording_get_node(self, key, *args, **kwargs):
            recorder.record(self, key)
            return get_node(self, key, *args, **kwargs)

        def recording_contains(self, key):
            if not recorder.paused and not recorder.busy and self._get_parent() is not None:
                recorder.record(self._get_parent(), self._key())  # a lookup table: read whole
            return contains(self, key)

        def whole_config_copy(function):
            def copy(cfg, *args, **kwargs):
                whole = OmegaConf.is_config(cfg) and cfg._get_parent() is None
                recorder.paused += whole
                try:
                    return function(cfg, *args, **kwargs)
                finally:
                    recorder.paused -= whole

            return staticmethod(copy)

        def not_a_read(function):
            def call(*args, **kwargs):
                recorder.paused += 1
                try:
                    return function(*args, **kwargs)
                finally:
                    recorder.paused -= 1

            return call

        # Composing, setting and merging walk the nodes too: none of that is the code using a setting.
        for owner, name in (
            (Hydra, "compose_config"),
            (DictConfig, "__setattr__"),
            (DictConfig, "__setitem__"),
            (BaseContainer, "merge_with"),
        ):
            self.patches.enter_context(_patched(owner, name, not_a_read(owner.__dict__[name])))
        self.patches.enter_context(_patched(DictConfig, "_get_node", recording_get_node))
        self.patches.enter_context(_patched(DictConfig, "__contains__", recording_contains))
        self.patches.enter_context(_patched(OmegaConf, "to_container", whole_config_copy(to_container)))
        self.patches.enter_context(_patched(OmegaConf, "to_yaml", whole_config_copy(to_yaml)))
        self.patches.enter_context(_patched(OmegaConf, "save", whole_config_copy(save)))
        return self

    def __exit__(self, *exc) -> None:
        self.patches.close()

    def of(self, cfg) -> set[str]:
        return self.reads[id(cfg)]


@contextlib.contextmanager
def _patched(owner, name: str, value) -> Iterator[None]:
    original = owner.__dict__[name]
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def is_read(key: str, reads: set[str]) -> bool:
    """``key`` or a node above it was read (reading a node reads what it holds)."""
    parts = key.split(".")
    return any(".".join(parts[:end]) in reads for end in range(1, len(parts) + 1))


def plain_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """The full keys of the leaves of ``cfg`` outside any ``_target_`` node (those the code must read)."""
    for key in cfg:
        node = cfg._get_node(key)
        full = f"{prefix}{key}"
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            if "_target_" in node:
                continue
            yield from plain_keys(node, prefix=f"{full}.")
        else:
            yield full


def target_nodes(cfg, prefix: str = "") -> Iterator[tuple[str, DictConfig]]:
    """(full key, node) of every node with a ``_target_``, nested ones included."""
    items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for key, _ in items:
        node = cfg._get_node(key)
        full = f"{prefix}{key}"
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            if "_target_" in node:
                yield full, node
            yield from target_nodes(node, prefix=f"{full}.")
        elif isinstance(node, ListConfig) and not node._is_none():
            yield from target_nodes(node, prefix=f"{full}.")


def parameters_of(target) -> tuple[set[str], bool]:
    """The keyword names ``target`` takes (classes: their ``__init__`` and, through ``**kwargs``, their
    bases' or ``KEYWORDS_HANDED_TO``'s and the fields of the dataclass they collect settings into,
    ``settings_type``), and whether it takes any keyword beyond those."""
    callables = (
        [base.__init__ for base in inspect.getmro(target) if "__init__" in vars(base)]
        if (inspect.isclass(target))
        else [target]
    )
    names: set[str] = set()
    if target in KEYWORDS_HANDED_TO:
        names, _ = parameters_of(KEYWORDS_HANDED_TO[target])
    settings_type = getattr(target, "settings_type", None)
    if dataclasses.is_dataclass(settings_type):
        names = {field.name for field in dataclasses.fields(settings_type)}
    for function in callables:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return names, True
        parameters = signature.parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names, False
    return names, True


def unknown_target_keys(cfg: DictConfig) -> list[str]:
    """``<node key>.<key>`` of every key of a ``_target_`` node that its target does not take."""
    unknown = []
    for full, node in target_nodes(cfg):
        target = get_object(str(node._get_node("_target_")._value()))
        names, open_ended = parameters_of(target)
        if open_ended:
            continue
        unknown += [f"{full}.{key}" for key in node if key not in HYDRA_KEYS and key not in names]
    return unknown

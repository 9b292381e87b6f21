"""Composed configs printed as a rich tree (a branch per top-level key), as lightning-hydra-template does."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree


def _yaml(cfg: DictConfig, key: str) -> str:
    """``key: value`` of ``cfg`` as YAML, resolved where it can be (a value only a running job resolves, or
    a missing ``???``, is shown as written)."""
    try:
        value = cfg[key]  # a node that keeps its parent, so interpolations resolve in the whole config
        resolved = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except OmegaConfBaseException:  # shown as written: interpolations and ``???`` kept
        resolved = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key]), resolve=False)[key]
    return OmegaConf.to_yaml({key: resolved}).rstrip("\n")


def config_tree(configs: Mapping[str, DictConfig], title: str = "config") -> Tree:
    """A tree with one branch per entry of ``configs`` (a stage's name -> its composed config), each with
    one branch per top-level key holding that key's YAML."""
    tree = Tree(title, guide_style="dim")
    for name, cfg in configs.items():
        branch = tree.add(name)
        for key in cfg:
            branch.add(Syntax(_yaml(cfg, key), "yaml", word_wrap=True, background_color="default"))
    return tree


def print_config_tree(configs: Mapping[str, DictConfig], title: str = "config") -> None:
    """Print :func:`config_tree` to standard output (long lines wrap, nothing is cut)."""
    Console(force_jupyter=False).print(config_tree(configs, title))

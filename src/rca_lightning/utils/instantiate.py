"""Build the Lightning objects of a run from a composed config."""

from hydra.utils import instantiate
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def instantiate_collection(config: DictConfig | None) -> list:
    """Instantiate every entry of a config group of named objects (callbacks, loggers), skipping nulls."""
    if not config:
        return []
    return [instantiate(entry) for entry in config.values() if entry is not None and "_target_" in entry]


def instantiate_callbacks(config: DictConfig | None) -> list[Callback]:
    return instantiate_collection(config)


def instantiate_loggers(config: DictConfig | None) -> list[Logger]:
    return instantiate_collection(config)

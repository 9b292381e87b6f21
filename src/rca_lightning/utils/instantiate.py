"""Build the Lightning objects of a run from a composed config."""

from collections.abc import Iterator
from contextlib import contextmanager

from hydra.utils import instantiate
from lightning import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
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


@contextmanager
def opened_loggers(config: DictConfig | None) -> Iterator[list[Logger]]:
    """The loggers of ``config``; on the way out (also on an error) the wandb run they started, if they
    started one, is finished, so that the next stage of a pipeline, or the next job of a multirun, in this
    process starts a run of its own."""
    loggers = instantiate_loggers(config)
    try:
        yield loggers
    finally:
        if any(isinstance(logger, WandbLogger) for logger in loggers):
            import wandb  # the wandb extra; imported only when a wandb logger was configured

            wandb.finish()  # no run started (a setting refused before training): nothing to do

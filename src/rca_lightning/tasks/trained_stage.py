"""What every trained stage builds before it fits: the seed, the datamodule prepared over the ranks, the
LightningModule, the trainer with its callbacks and loggers, and the claim on the output folder's settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from rca_lightning.utils.instantiate import instantiate_callbacks
from rca_lightning.utils.ranks import stage_ranks
from rca_lightning.utils.run_fingerprint import claim_run_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedStage:
    """The objects a trained stage runs with."""

    datamodule: L.LightningDataModule
    model: L.LightningModule
    trainer: L.Trainer


def build_trained_stage(
    cfg: DictConfig, model_cfg: DictConfig, loggers: list[Logger], stage: str
) -> TrainedStage:
    """Seed, build and prepare everything ``cfg`` describes for ``stage`` (``rca-train``, ``rca-seg``).

    ``model_cfg`` is the LightningModule's config. The settings the weights are made with are recorded in
    ``cfg.paths.output_dir`` at the first start; a resume with other settings is refused there.
    """
    # Lightning prints its "Seed set" line to stderr, past the job's log: logged here instead.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    log.info("Seed %d", cfg.seed)
    datamodule = instantiate(cfg.data)
    with stage_ranks(stage, cfg.barrier_timeout_s) as ranks:  # COCO's masks rendered by every process
        datamodule.prepare_over_ranks(ranks)
    model = instantiate(model_cfg)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    claim_run_settings(cfg.paths.output_dir, cfg)
    return TrainedStage(datamodule, model, trainer)


__all__ = ["TrainedStage", "build_trained_stage"]

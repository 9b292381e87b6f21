"""``rca-boundary``: train IRN's boundary network on relation labels, then write the boundary maps of a split
for the random walk (``rca-pseudo refine=random_walk refine.boundary_dir=...``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader, Subset

from rca_lightning.inference.trained_runs import resolve_training_run
from rca_lightning.pseudo.boundary_maps import BoundaryMapWriter, boundary_map_path
from rca_lightning.tasks.stage_settings import (
    check_mask_folder,
    claim_output_folder,
    dataset_record,
    scalar_metrics,
)
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.checkpoint_selection import check_checkpoint_file
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.folder_lock import owned_folder
from rca_lightning.utils.instantiate import instantiate_callbacks, opened_loggers
from rca_lightning.utils.ranks import stage_ranks
from rca_lightning.utils.run_fingerprint import claim_run_settings
from rca_lightning.utils.safe_loading import trusted_target_names

log = logging.getLogger(__name__)


def boundary(cfg: DictConfig) -> tuple[dict, dict]:
    """Fit the boundary network (``cfg.train``; resuming from ``ckpt_path``) on the relation labels of
    ``ir_labels_dir``, then write the maps of ``split`` that are not written yet into ``boundary_dir``.
    With ``classifier_dir`` the frozen backbone is that classifier's (:func:`classifier_backbone`).
    ``boundary_dir`` is this process's while it runs (one owner per folder)."""
    with owned_folder(cfg.boundary_dir, "boundary_dir"), opened_loggers(cfg.get("logger")) as loggers:
        return _boundary(cfg, loggers)


def _boundary(cfg: DictConfig, loggers: list[Logger]) -> tuple[dict, dict]:
    if not cfg.train and not cfg.get("ckpt_path"):
        raise InvalidSetting(
            "ckpt_path: train=false writes maps of a trained network; expected ckpt_path=FILE"
        )
    check_checkpoint_file(cfg.get("ckpt_path"), "rca-boundary")
    trusted_targets = trusted_target_names(cfg.trusted_targets)  # checked now, used with classifier_dir
    if cfg.train:
        check_mask_folder(Path(cfg.ir_labels_dir), "ir_labels_dir", "rca-pseudo refine=ir_labels")
    # What the network is made with: recorded at the first start, a resume with other settings refused.
    claim_run_settings(cfg.paths.output_dir, cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone = classifier_backbone(cfg.classifier_dir, trusted_targets) if cfg.get("classifier_dir") else None
    if backbone is not None:
        with open_dict(cfg):
            cfg.boundary_model.net.backbone.merge_with(backbone)
    datamodule = instantiate(cfg.data)
    with stage_ranks("rca-boundary", cfg.barrier_timeout_s) as ranks:  # COCO's masks, by every process
        datamodule.prepare_over_ranks(ranks)
    model = instantiate(cfg.boundary_model)
    boundary_dir = Path(cfg.boundary_dir)
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), BoundaryMapWriter(boundary_dir)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(scalar_metrics(trainer.callback_metrics))
    settings = {
        "stage": "rca-boundary",
        "split": cfg.split,
        "dataset": dataset_record(datamodule),
        # The maps are at stride 4 of the images resized by it (the random walk reads it here).
        "image_scale": float(model.hparams.image_scale),
        # The frozen backbone: a classifier's (its selected checkpoint) or boundary_model.net.backbone's.
        "backbone": OmegaConf.to_container(cfg.boundary_model.net.backbone),
        # The weights that write the maps: the end of this run's schedule, or ckpt_path.
        "checkpoint": str(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
        if cfg.train
        else cfg.ckpt_path,
    }
    if trainer.is_global_zero:
        boundary_dir.mkdir(parents=True, exist_ok=True)
        claim_output_folder(boundary_dir, settings)
    dataset = datamodule.make_dataset(cfg.split, train=False)
    pending = [
        index
        for index, image_id in enumerate(dataset.image_ids)
        if not boundary_map_path(boundary_dir, image_id).is_file()
    ]
    loader = DataLoader(Subset(dataset, pending), batch_size=1, num_workers=datamodule.num_workers)
    start = time.perf_counter()
    if pending:
        # train=false: the weights of ckpt_path (loaded by the trainer's checkpoint IO, weights only).
        ckpt_path = None if cfg.train else cfg.ckpt_path
        trainer.predict(model, dataloaders=loader, ckpt_path=ckpt_path, return_predictions=False)
    seconds = time.perf_counter() - start
    summary = {
        **settings,
        "boundary_dir": str(boundary_dir),
        "metrics": metrics,
        "total": len(dataset),
        "written": len(pending),
        "seconds": seconds,
    }
    if trainer.is_global_zero:
        write_json_atomically(Path(cfg.paths.output_dir) / "boundary.json", summary)
        log.info(
            "Boundary maps of %d images in %s (%d computed now)", len(dataset), boundary_dir, len(pending)
        )
    return summary, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


def classifier_backbone(classifier_dir: str, trusted_targets: Iterable[str] = ()) -> dict:
    """The backbone settings that rebuild the classifier of an rca-train run folder with its selected
    checkpoint's weights (the run's ``model.net.backbone`` architecture, no other pretrained weights); the
    run's config may build only the shipped configs' classes and ``trusted_targets``."""
    run = resolve_training_run(classifier_dir, None, None, trusted_targets)
    trained = run.model_cfg.net.backbone
    return {
        "name": trained.name,
        "output_stride": trained.output_stride,
        "pretrained": False,
        "checkpoint_path": str(run.checkpoint),
    }

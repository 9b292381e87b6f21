"""``rca-eval``: score seeds (background-threshold sweep) and / or pseudo masks against ground truth.

``rca-eval cams_dir=<rca-cams run>/cams masks_dir=<rca-pseudo run>/pseudo_masks``; the split and dataset are
those recorded by the stage that wrote the folder. ``seeds=attention attention_dir=<rca-train run>/attention``
scores the accumulated attention of the tagged classes instead of CAMs (no ``cams_dir`` needed: the ``data``
config's dataset and its ``train_split``), ``seeds=max cams_dir=... attention_dir=...`` the pixel-wise max of
both. Writes ``eval.json`` under ``hydra.run.dir``: per scored kind (``cams``, ``pseudo_masks``) the mIoU, the
per-class IoU (null for a class absent from prediction and ground truth: left out of the mean) and what each
IoU covers, ``per_class_images`` (the images whose ground truth holds the class; 0: absent from the split)
and ``per_class_pixels`` (its ground-truth pixels scored, the confusion matrix's row sum). Launched by
torchrun or srun, the processes share the images (every count is summed over them).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rca_lightning.pseudo.cam_evaluation import evaluate_cams, evaluate_masks, sweep_thresholds
from rca_lightning.tasks.stage_settings import datamodule_for, read_settings, seed_settings, seeds_and_dataset
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.ranks import Ranks, stage_ranks
from rca_lightning.utils.setting_ranges import MAX_WORKERS, is_in_range, number_in_range

log = logging.getLogger(__name__)
# The most background thresholds one sweep scores (one confusion matrix each): a step of 0.001 over [0, 1].
MAX_THRESHOLDS = 1001


def _split_dataset(cfg: DictConfig, folder: Path, stage: str, setting: str):
    settings = read_settings(folder, stage, setting)
    source = datamodule_for(cfg.data, settings["dataset"], settings["split"])
    return source.make_dataset(settings["split"], train=False), settings


def threshold_sweep(thresholds: Any) -> torch.Tensor:
    """The (T,) background thresholds of ``thresholds=[start, stop, step]`` (stop included); InvalidSetting
    unless ``0 <= start <= stop <= 1``, ``step > 0`` and they make at most ``MAX_THRESHOLDS``."""
    values = list(thresholds) if OmegaConf.is_list(thresholds) else []
    if (
        len(values) != 3
        or not all(is_in_range(value, 0.0, 1.0) for value in values)
        or not values[0] <= values[1]
        or not values[2] > 0
        or (values[1] - values[0]) / values[2] >= MAX_THRESHOLDS
    ):
        raise InvalidSetting(
            "thresholds: expected [start, stop, step], numbers in [0, 1] with start <= stop, step > 0 and "
            f"at most {MAX_THRESHOLDS} thresholds, got {thresholds}"
        )
    start, stop, step = values
    return sweep_thresholds(start, stop, step)


def evaluate(cfg: DictConfig) -> tuple[dict, dict]:
    """Score what ``cfg`` names; returns flat metrics (``cams/miou``, ``pseudo/miou``, ...) and the report.
    Under torchrun or srun each process scores its share of the images, the pixel counts are summed and the
    first process writes ``eval.json``."""
    with stage_ranks("rca-eval", cfg.barrier_timeout_s) as ranks:
        return _evaluate(cfg, ranks)


def _evaluate(cfg: DictConfig, ranks: Ranks) -> tuple[dict, dict]:
    # Every folder is checked before any scoring; a check that fails on any rank stops every rank with its
    # line, before anyone waits for the others.
    with ranks.agree_outcome():
        score_seeds = bool(cfg.get("cams_dir")) or cfg.seeds != "cams"
        if not score_seeds and not cfg.get("masks_dir"):
            raise InvalidSetting(
                "cams_dir / masks_dir: expected cams_dir=<rca-cams output> (or seeds=attention "
                "attention_dir=<accumulation>) and/or masks_dir=<rca-pseudo output>, got neither"
            )
        sweep = threshold_sweep(cfg.thresholds) if score_seeds else None
        number_in_range("num_workers", cfg.num_workers, 0, MAX_WORKERS, integer=True)
        seeds = seeds_and_dataset(cfg) if score_seeds else None
        masks_dir = Path(cfg.masks_dir) if cfg.get("masks_dir") else None
        masks = _split_dataset(cfg, masks_dir, "rca-pseudo", "masks_dir") if masks_dir else None
    report: dict = {}
    if seeds is not None:
        seed_source, _, split, dataset = seeds
        report["cams"] = {
            **seed_settings(seed_source),
            "split": split,
            **evaluate_cams(
                seed_source,
                dataset.image_ids,
                [dataset.mask_path(image_id) for image_id in dataset.image_ids],
                dataset.class_names,
                thresholds=sweep,
                num_workers=cfg.num_workers,
                progress=cfg.progress,
                labels=dataset.labels,
                ranks=ranks,
            ),
        }
    if masks is not None:
        dataset, settings = masks
        report["pseudo_masks"] = {
            "masks_dir": str(cfg.masks_dir),
            "split": settings["split"],
            **evaluate_masks(
                cfg.masks_dir,
                dataset.image_ids,
                [dataset.mask_path(image_id) for image_id in dataset.image_ids],
                dataset.class_names,
                num_workers=cfg.num_workers,
                progress=cfg.progress,
                ranks=ranks,
            ),
        }
    if ranks.is_main:
        write_json_atomically(Path(cfg.paths.output_dir) / "eval.json", report)
    metrics = {}
    if "cams" in report:
        metrics["cams/miou"] = report["cams"]["miou"]
        metrics["cams/best_threshold"] = report["cams"]["best_threshold"]
    if "pseudo_masks" in report:
        metrics["pseudo/miou"] = report["pseudo_masks"]["miou"]
        metrics["pseudo/ignored_fraction"] = report["pseudo_masks"]["ignored_fraction"]
    if ranks.is_main:
        log.info(
            "Evaluation (also in %s): %s",
            Path(cfg.paths.output_dir) / "eval.json",
            json.dumps(metrics, indent=2),
        )
    return metrics, report

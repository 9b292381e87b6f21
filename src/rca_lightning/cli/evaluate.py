"""``rca-eval``: score CAM files (background-threshold sweep) and / or pseudo masks against ground truth.

``rca-eval cams_dir=<rca-cams run>/cams masks_dir=<rca-pseudo run>/pseudo_masks``; the split and dataset are
those recorded by the stage that wrote the folder. Writes ``eval.json`` under ``hydra.run.dir``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rca_lightning.cli.stage_settings import datamodule_for, read_settings
from rca_lightning.pseudo.cam_evaluation import evaluate_cams, evaluate_masks, sweep_thresholds
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.resolvers import register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def _split_dataset(cfg: DictConfig, folder: Path, stage: str):
    settings = read_settings(folder, stage)
    source = datamodule_for(cfg.data, settings["dataset"])
    return source.make_dataset(settings["split"], train=False), settings


def evaluate(cfg: DictConfig) -> tuple[dict, dict]:
    """Score what ``cfg`` names; returns flat metrics (``cams/miou``, ``pseudo/miou``, ...) and the report."""
    if not cfg.get("cams_dir") and not cfg.get("masks_dir"):
        raise ValueError("rca-eval needs cams_dir=<rca-cams output> and/or masks_dir=<rca-pseudo output>")
    report: dict = {}
    if cfg.get("cams_dir"):
        dataset, settings = _split_dataset(cfg, Path(cfg.cams_dir), "rca-cams")
        report["cams"] = {
            "cams_dir": str(cfg.cams_dir),
            "split": settings["split"],
            **evaluate_cams(
                cfg.cams_dir,
                dataset.image_ids,
                [dataset.mask_path(image_id) for image_id in dataset.image_ids],
                dataset.class_names,
                thresholds=sweep_thresholds(*cfg.thresholds),
                num_workers=cfg.num_workers,
                progress=cfg.progress,
            ),
        }
    if cfg.get("masks_dir"):
        dataset, settings = _split_dataset(cfg, Path(cfg.masks_dir), "rca-pseudo")
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
            ),
        }
    write_json_atomically(Path(cfg.paths.output_dir) / "eval.json", report)
    metrics = {}
    if "cams" in report:
        metrics["cams/miou"] = report["cams"]["miou"]
        metrics["cams/best_threshold"] = report["cams"]["best_threshold"]
    if "pseudo_masks" in report:
        metrics["pseudo/miou"] = report["pseudo_masks"]["miou"]
        metrics["pseudo/ignored_fraction"] = report["pseudo_masks"]["ignored_fraction"]
    log.info(
        "Evaluation (also in %s): %s", Path(cfg.paths.output_dir) / "eval.json", json.dumps(metrics, indent=2)
    )
    return metrics, report


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()

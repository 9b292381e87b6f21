"""The pipeline report's pictures: the grid of example images through the stages, and each scored stage's
confusion matrix and per-class IoU; also logged to the run's loggers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from rca_lightning.cli.stage_settings import datamodule_for, read_settings
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.report.figure_selection import pick_figure_images
from rca_lightning.report.report_figures import grid_rows, pipeline_figure, write_grid
from rca_lightning.report.score_figures import write_score_figures
from rca_lightning.utils.image_logging import log_images
from rca_lightning.utils.instantiate import instantiate_loggers

log = logging.getLogger(__name__)
# The stages whose outputs the grid shows (image, ground truth, seeds, pseudo mask, prediction).
GRID_STAGES = ("cams", "pseudo_masks", "segmentation")
HEADLINES = ("cam_miou", "pseudo_label_miou", "seg_miou")


def grid_figure(cfg: DictConfig, stage_dirs: dict[str, Path]) -> tuple[np.ndarray, list[str]]:
    """CAM-split images that cover many classes through the seeds, the pseudo masks and the segmentation
    network (``cfg.report``: how many, panel size): the (H, W, 3) uint8 grid and the image ids."""
    cams_dir = stage_dirs["cams"] / "maps"
    settings = read_settings(cams_dir, "rca-cams")
    dataset = datamodule_for(cfg.data, settings["dataset"]).make_dataset(settings["split"])
    image_ids = pick_figure_images(dataset.image_ids, dataset.labels, cfg.report.figure_images)
    rows, mask_values = grid_rows(
        image_ids,
        [dataset.image_path(image_id) for image_id in image_ids],
        [dataset.mask_path(image_id) for image_id in image_ids],
        cams_dir,
        stage_dirs["pseudo_masks"] / "masks",
        Segmenter.from_run(stage_dirs["segmentation"], source="seg"),
        dataset.class_names,
        cfg.report.panel_size,
    )
    return pipeline_figure(rows, mask_values, dataset.class_names, cfg.report.panel_size), image_ids


def write_pipeline_figures(
    cfg: DictConfig, report: dict, stage_dirs: dict[str, Path], folder: Path
) -> list[str]:
    """``folder/grid.png`` when the seeds, pseudo masks and segmentation network all ran, and each scored
    stage's ``confusion_<stage>.png`` and ``iou_<stage>.png``; the grid and the headline figures also go to
    the loggers of ``cfg.logger``. Returns the files written."""
    written = [str(path) for path in write_score_figures(stage_dirs, report, folder)]
    loggers = instantiate_loggers(cfg.get("logger"))
    if all(stage in stage_dirs for stage in GRID_STAGES):
        grid, image_ids = grid_figure(cfg, stage_dirs)
        written.insert(0, str(write_grid(grid, folder / "grid.png")))
        log_images(loggers, "pipeline/figures", [grid], captions=[", ".join(image_ids)])
    else:
        log.info("No figures/grid.png: stages %s did not all run", ", ".join(GRID_STAGES))
    scalars = {f"pipeline/{key}": report[key] for key in HEADLINES if report.get(key) is not None}
    for logger in loggers:
        logger.log_metrics(scalars)
        logger.save()
        logger.finalize("success")
    return written

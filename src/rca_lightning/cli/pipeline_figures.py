"""The pipeline report's pictures: the grid of example images through the stages, and each scored stage's
confusion matrix and per-class IoU (:mod:`~rca_lightning.cli.pipeline_loggers` logs them)."""

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

log = logging.getLogger(__name__)
# The stages whose outputs the grid shows (image, ground truth, seeds, pseudo mask, prediction).
GRID_STAGES = ("cams", "pseudo_masks", "segmentation")


def grid_figure(cfg: DictConfig, stage_dirs: dict[str, Path]) -> np.ndarray:
    """CAM-split images that cover many classes through the seeds, the pseudo masks and the segmentation
    network (``cfg.report``: how many, panel size): the (H, W, 3) uint8 grid."""
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
    return pipeline_figure(rows, mask_values, dataset.class_names, cfg.report.panel_size)


def write_pipeline_figures(
    cfg: DictConfig, report: dict, stage_dirs: dict[str, Path], folder: Path
) -> list[str]:
    """``folder/grid.png`` when the seeds, pseudo masks and segmentation network all ran, and each scored
    stage's ``confusion_<stage>.png`` and ``iou_<stage>.png``. Returns the files written."""
    written = [str(path) for path in write_score_figures(stage_dirs, report, folder)]
    if all(stage in stage_dirs for stage in GRID_STAGES):
        written.insert(0, str(write_grid(grid_figure(cfg, stage_dirs), folder / "grid.png")))
    else:
        log.info("No figures/grid.png: stages %s did not all run", ", ".join(GRID_STAGES))
    return written

"""The pipeline report's pictures: the grid of example images through the stages, and each scored stage's
confusion matrix and per-class IoU (:mod:`~rca_lightning.pipeline.loggers` logs them)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from rca_lightning.report.figure_sample import SAMPLE_FOLDER, read_figure_sample
from rca_lightning.report.report_figures import grid_rows, pipeline_figure, write_grid
from rca_lightning.report.score_figures import write_score_figures

log = logging.getLogger(__name__)
# The stages whose outputs the grid shows (image, ground truth, seeds, pseudo mask, prediction).
GRID_STAGES = ("cams", "pseudo_masks", "segmentation")


def grid_figure(cfg: DictConfig, stage_dirs: dict[str, Path]) -> np.ndarray:
    """The segmentation run's figure sample (training images that cover many classes) through the seeds,
    the pseudo masks and the network, from the files the stages wrote (``cfg.report.panel_size``): the
    (H, W, 3) uint8 grid."""
    class_names, sample = read_figure_sample(stage_dirs["segmentation"] / SAMPLE_FOLDER)
    rows, mask_values = grid_rows(
        sample,
        stage_dirs["cams"] / "maps",
        stage_dirs["pseudo_masks"] / "masks",
        class_names,
        cfg.report.panel_size,
    )
    return pipeline_figure(rows, mask_values, class_names, cfg.report.panel_size)


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

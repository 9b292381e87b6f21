"""``figures/grid.png`` of a pipeline run: image / ground truth / CAM / pseudo mask / prediction per row.

The CAM column is a turbo heat map of the strongest tagged class with each tagged class named at its peak;
the masks are in the VOC colours, named by a legend under the grid.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from rca_lightning.imaging.drawing import cam_overlay, colourise_mask
from rca_lightning.imaging.image_arrays import read_rgb_file
from rca_lightning.imaging.palette_png import read_mask_png
from rca_lightning.pseudo.cam_writer import cam_path, load_cam_file
from rca_lightning.pseudo.pseudo_mask_writer import mask_path
from rca_lightning.report.figure_grid import cam_peaks, figure_grid, fit_panel, label_panel, legend_strip
from rca_lightning.report.figure_sample import SampleImage
from rca_lightning.utils.atomic import write_bytes_atomically

GRID_TITLES = ("image", "ground truth", "CAM", "pseudo mask", "prediction")


def cam_panel(
    image: np.ndarray, classes: np.ndarray, cams: np.ndarray, class_names: Sequence[str], panel_size: int
) -> np.ndarray:
    """The CAM heat map of an image fitted to a square panel, each tagged class named at its peak.

    Tagged classes whose CAM is zero everywhere are named at the bottom (``no CAM: ...``).

    Args:
        image: (H, W, 3) uint8 RGB.
        classes: (K,) 0-based foreground indices of the image's tagged classes.
        cams: (K, H, W) their scores in [0, 1].
        class_names: the C foreground class names.
        panel_size: side of the square panel in pixels.

    Returns:
        (panel_size, panel_size, 3) uint8.
    """
    panel = fit_panel(cam_overlay(image, cams), panel_size)
    scale = panel_size / max(image.shape[:2])
    peaks = (cam_peaks(cams) + 0.5) * scale  # (K, 2) panel coordinates of each class's peak
    fires = cams.max(axis=(1, 2), initial=0) > 0  # (K,)
    labels = [
        (class_names[c], row, column)
        for c, (row, column), active in zip(classes, peaks, fires, strict=True)
        if active
    ]
    silent = [class_names[c] for c in classes[~fires]]
    if silent:
        labels.append(("no CAM: " + ", ".join(silent), panel_size, panel_size / 2))
    return label_panel(panel, labels)


def grid_rows(
    sample: Sequence[SampleImage],
    cams_dir: Path,
    masks_dir: Path,
    class_names: Sequence[str],
    panel_size: int,
) -> tuple[list[list[np.ndarray]], list[int]]:
    """One row of five RGB panels per image of a segmentation run's figure sample (a handful of images: a
    plain loop), from files alone: the image, its ground truth, its CAM file, its pseudo mask, the
    recorded prediction.

    Returns:
        The rows, and the sorted mask values the ground truth, pseudo masks and predictions show.
    """
    rows, masks = [], []
    for item in sample:
        image = read_rgb_file(item.image)
        truth = (
            read_mask_png(item.ground_truth) if item.ground_truth.is_file() else np.full(image.shape[:2], 255)
        )
        classes, cams = load_cam_file(cam_path(cams_dir, item.image_id))
        pseudo_mask = read_mask_png(mask_path(masks_dir, item.image_id))
        prediction = read_mask_png(item.prediction)
        masks += [truth, pseudo_mask, prediction]
        rows.append(
            [
                image,
                colourise_mask(truth),
                cam_panel(image, classes, cams, class_names, panel_size),
                colourise_mask(pseudo_mask),
                colourise_mask(prediction),
            ]
        )
    values = np.unique(np.concatenate([mask.ravel() for mask in masks])) if masks else np.zeros(0, int)
    return rows, values.tolist()


def pipeline_figure(
    rows: list[list[np.ndarray]], mask_values: Sequence[int], class_names: Sequence[str], panel_size: int
) -> np.ndarray:
    """The rows of :func:`grid_rows` under ``GRID_TITLES``, above a legend of the mask colours they show.

    Args:
        rows: the panels, five per image (:func:`grid_rows`).
        mask_values: the mask values the panels show (:func:`grid_rows`).
        class_names: the C foreground class names (mask value ``i + 1`` is ``class_names[i]``).
        panel_size: side of one square panel in pixels.

    Returns:
        (H, 5 * (panel_size + GAP), 3) uint8.
    """
    grid = figure_grid(rows, GRID_TITLES, panel_size)
    legend = legend_strip(mask_values, ["background", *class_names], grid.shape[1])
    return np.concatenate([grid, legend])


def write_grid(grid: np.ndarray, path: Path) -> Path:
    """Write the (H, W, 3) uint8 figure to ``path`` as a PNG, atomically; returns ``path``."""
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    write_bytes_atomically(path, buffer.getvalue())
    return path


__all__ = [
    "GRID_TITLES",
    "cam_panel",
    "grid_rows",
    "pipeline_figure",
    "write_grid",
]

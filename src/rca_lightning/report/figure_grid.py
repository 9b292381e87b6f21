"""Pictures of the pipeline's outputs: masks in the VOC colours, CAM overlays, and a titled grid of panels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from rca_lightning.data.voc_classes import voc_palette

TITLE_HEIGHT = 14
GAP = 2


def colourise_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices (0 background, 1..C, 255 ignore) -> (H, W, 3) uint8 in the VOC colours."""
    return voc_palette()[mask.astype(np.uint8)]


def cam_overlay(
    image: np.ndarray, cams: np.ndarray, classes: np.ndarray, strength: float = 0.7
) -> np.ndarray:
    """Each pixel tinted with the colour of its strongest tagged class, as much as that class's score.

    Args:
        image: (H, W, 3) uint8 RGB.
        cams: (K, H, W) scores in [0, 1] of the image's K tagged classes.
        classes: (K,) their 0-based foreground indices (colour of class c: VOC palette entry c + 1).
        strength: tint weight at score 1.

    Returns:
        (H, W, 3) uint8.
    """
    if len(classes) == 0:
        return image.copy()
    top = cams.argmax(0)  # (H, W) position among the K classes
    weight = strength * cams.max(0)[..., None]  # (H, W, 1)
    colour = voc_palette()[np.asarray(classes)[top] + 1].astype(np.float32)  # (H, W, 3)
    return np.rint(image * (1 - weight) + colour * weight).astype(np.uint8)


def _fit(panel: np.ndarray, size: int) -> np.ndarray:
    """Scale a panel to fit a size x size square (nearest, so masks keep their colours), padded white."""
    height, width = panel.shape[:2]
    scale = size / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(panel).resize(new_size, Image.NEAREST))
    square = np.full((size, size, 3), 255, np.uint8)
    square[: resized.shape[0], : resized.shape[1]] = resized
    return square


def figure_grid(
    rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], panel_size: int = 160
) -> np.ndarray:
    """Panels in a grid under a row of column titles.

    Args:
        rows: R rows of N (H, W, 3) uint8 panels each (sizes may differ; each is fitted to a square).
        titles: the N column titles.
        panel_size: side of one square panel in pixels.

    Returns:
        (TITLE_HEIGHT + R * (panel_size + GAP), N * (panel_size + GAP), 3) uint8.
    """
    if any(len(row) != len(titles) for row in rows):
        raise ValueError(f"figure_grid: every row needs {len(titles)} panels, one per title")
    step = panel_size + GAP
    grid = np.full((TITLE_HEIGHT + len(rows) * step, len(titles) * step, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            top = TITLE_HEIGHT + r * step
            grid[top : top + panel_size, c * step : c * step + panel_size] = _fit(panel, panel_size)
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((c * step + 2, 1), title, fill=(0, 0, 0))
    return np.asarray(canvas)


__all__ = ["cam_overlay", "colourise_mask", "figure_grid"]

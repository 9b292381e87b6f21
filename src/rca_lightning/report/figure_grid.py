"""The pipeline's figure layout: panels fitted and labelled, a titled grid, a legend of the mask colours
(the masks and heat maps themselves are drawn by :mod:`rca_lightning.imaging.drawing`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rca_lightning.data.voc_classes import IGNORE_INDEX, voc_palette
from rca_lightning.imaging.drawing import turbo_colours

TITLE_HEIGHT = 14
GAP = 2
LEGEND_LINE_HEIGHT = 16
SWATCH_SIZE = 10
COLOUR_BAR_WIDTH = 60
BLACK, WHITE = (0, 0, 0), (255, 255, 255)

# (text, row, column): a name drawn centred on a pixel of a panel.
PanelLabel = tuple[str, float, float]


def cam_peaks(cams: np.ndarray) -> np.ndarray:
    """(K, H, W) scores -> (K, 2) int64 (row, column) of each map's highest score (the first one on ties)."""
    flat_peaks = cams.reshape(len(cams), cams.shape[1] * cams.shape[2]).argmax(1)  # (K,)
    return np.stack(np.unravel_index(flat_peaks, cams.shape[1:]), axis=1).astype(np.int64)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _overlaps(box: tuple[int, int, int, int], others: Sequence[tuple[int, int, int, int]]) -> bool:
    left, top, right, bottom = box
    return any(
        left < o_right and o_left < right and top < o_bottom and o_top < bottom
        for o_left, o_top, o_right, o_bottom in others
    )


def label_panel(panel: np.ndarray, labels: Sequence[PanelLabel]) -> np.ndarray:
    """A copy of the panel with each label's text centred on its pixel, white edged in black, kept inside.

    A label that would cover an earlier one moves down a line at a time while it fits in the panel.

    Args:
        panel: (H, W, 3) uint8 RGB.
        labels: (text, row, column) of each name.

    Returns:
        (H, W, 3) uint8.
    """
    canvas = Image.fromarray(panel)
    draw, font = ImageDraw.Draw(canvas), _font()
    height, width = panel.shape[:2]
    placed: list[tuple[int, int, int, int]] = []  # drawn text boxes (left, top, right, bottom)
    for text, row, column in labels:  # a few labels per panel
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=1)
        text_width, text_height = right - left, bottom - top
        x = int(np.clip(column - text_width / 2, 0, max(0, width - text_width)))
        y = int(np.clip(row - text_height / 2, 0, max(0, height - text_height)))
        while _overlaps((x, y, x + text_width, y + text_height), placed) and y + 2 * text_height <= height:
            y += text_height
        placed.append((x, y, x + text_width, y + text_height))
        draw.text((x - left, y - top), text, fill=WHITE, font=font, stroke_width=1, stroke_fill=BLACK)
    return np.asarray(canvas)


def fit_panel(panel: np.ndarray, size: int) -> np.ndarray:
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
            grid[top : top + panel_size, c * step : c * step + panel_size] = fit_panel(panel, panel_size)
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((c * step + 2, 1), title, fill=BLACK)
    return np.asarray(canvas)


def legend_strip(mask_values: Sequence[int], class_names: Sequence[str], width: int) -> np.ndarray:
    """A white strip naming the colours of a figure: the CAM heat scale, then a swatch per mask value.

    Items run left to right and wrap onto further lines of ``LEGEND_LINE_HEIGHT`` pixels.

    Args:
        mask_values: the mask values to explain (0 background, 1..C classes, 255 ignore).
        class_names: name of every mask value 0..C (``"background"`` first).
        width: width of the strip in pixels (the figure's).

    Returns:
        (L * LEGEND_LINE_HEIGHT, width, 3) uint8, L lines.
    """
    font, palette = _font(), voc_palette()
    values = sorted({int(value) for value in mask_values})
    names = ["ignore" if value == IGNORE_INDEX else class_names[value] for value in values]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    heat_label = "CAM score 0"
    # Each item: its left part (heat label and bar, or swatch), its text, a gap.
    widths = [measure.textlength(heat_label, font=font) + COLOUR_BAR_WIDTH + 28] + [
        SWATCH_SIZE + 4 + measure.textlength(name, font=font) + 12 for name in names
    ]
    positions, x, line = [], 2, 0
    for item_width in widths:  # a new line when an item would cross the right edge
        if x > 2 and x + item_width > width:
            x, line = 2, line + 1
        positions.append((x, line * LEGEND_LINE_HEIGHT))
        x += int(item_width)
    canvas = Image.new("RGB", (width, (line + 1) * LEGEND_LINE_HEIGHT), WHITE)
    draw = ImageDraw.Draw(canvas)
    offset = (LEGEND_LINE_HEIGHT - SWATCH_SIZE) // 2
    (x, y), *swatch_positions = positions
    draw.text((x, y + 2), heat_label, fill=BLACK, font=font)
    bar_left = x + int(draw.textlength(heat_label, font=font)) + 3
    bar = turbo_colours(np.tile(np.linspace(0, 1, COLOUR_BAR_WIDTH), (SWATCH_SIZE, 1)))  # (S, BAR, 3)
    canvas.paste(Image.fromarray(bar), (bar_left, y + offset))
    draw.text((bar_left + COLOUR_BAR_WIDTH + 3, y + 2), "1", fill=BLACK, font=font)
    for value, name, (x, y) in zip(values, names, swatch_positions, strict=True):
        box = (x, y + offset, x + SWATCH_SIZE - 1, y + offset + SWATCH_SIZE - 1)
        draw.rectangle(box, fill=tuple(int(c) for c in palette[value]), outline=(128, 128, 128))
        draw.text((x + SWATCH_SIZE + 4, y + 2), name, fill=BLACK, font=font)
    return np.asarray(canvas)


__all__ = ["cam_peaks", "figure_grid", "fit_panel", "label_panel", "legend_strip"]

"""Pictures of a scored stage: its row-normalised confusion matrix and its per-class IoU as bars.

Both are drawn from what the evaluations record (``confusion``: pixel counts, rows ground truth, columns
prediction, background first; per-class IoU in percent), so a figure always shows the report's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rca_lightning.imaging.drawing import colourise_mask, turbo_colours
from rca_lightning.report.report_figures import write_grid
from rca_lightning.utils.state_files import read_json_object

# Report stage -> (pipeline stage folder, file, keys to its confusion counts, title).
CONFUSION_SOURCES = {
    "cam": ("cam_eval", "eval.json", ("cams", "confusion"), "seeds (train)"),
    "ir_label": ("ir_label_eval", "eval.json", ("pseudo_masks", "confusion"), "relation labels (train)"),
    "pseudo_label": ("pseudo_mask_eval", "eval.json", ("pseudo_masks", "confusion"), "pseudo masks (train)"),
    "seg": ("segmentation", "metrics.json", ("test_confusion",), "segmentation (val)"),
}

MARGIN = 4
TEXT_HEIGHT = 12
BAR_LENGTH = 200
BAR_HEIGHT = 14
BLACK, GREY, WHITE = (0, 0, 0), (200, 200, 200), (255, 255, 255)


def _text_width(text: str, font: ImageFont.ImageFont) -> int:
    left, _, right, _ = font.getbbox(text)
    return right - left


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """(K, K) counts -> each row divided by its total (the share of a true class given each label);
    rows without pixels stay zero."""
    counts = np.asarray(confusion, np.float64)
    totals = counts.sum(1, keepdims=True)  # (K, 1)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_figure(
    confusion: np.ndarray, names: Sequence[str], title: str, cell: int | None = None
) -> np.ndarray:
    """The row-normalised confusion matrix as a turbo-coloured grid, rows and columns named.

    Args:
        confusion: (K, K) pixel counts, rows ground truth, columns prediction.
        names: the K class names (background first).
        title: drawn above the grid.
        cell: side of one cell in pixels (default: 24, smaller for many classes).

    Returns:
        (H, W, 3) uint8 RGB; each row's shares are printed in its cells when they fit.
    """
    shares = row_normalised(confusion)  # (K, K)
    size = len(names)
    if shares.shape != (size, size):
        raise ValueError(f"confusion of shape {shares.shape} for {size} names")
    cell = cell or int(np.clip(640 // max(size, 1), 6, 24))
    font = ImageFont.load_default()
    label_width = max(_text_width(name, font) for name in names) + 2 * MARGIN
    top = 2 * TEXT_HEIGHT + MARGIN
    heading = f"{title} (rows: ground truth, the share of each row)"
    footer = "columns: prediction, by row number"
    width = max(
        label_width + size * cell, _text_width(heading, font), label_width + _text_width(footer, font)
    )
    width, height = width + MARGIN, top + size * cell + TEXT_HEIGHT + MARGIN
    canvas = np.full((height, width, 3), 255, np.uint8)
    cells = np.repeat(np.repeat(turbo_colours(shares), cell, axis=0), cell, axis=1)  # (K*cell, K*cell, 3)
    canvas[top : top + size * cell, label_width : label_width + size * cell] = cells
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 0), heading, fill=BLACK, font=font)
    # With many classes, every n-th row name and column number, so that none overlaps the next.
    row_step = -(-TEXT_HEIGHT // cell)
    column_step = -(-(_text_width(str(size - 1), font) + 4) // cell)
    for index, name in enumerate(names):
        if index % row_step == 0:
            draw.text((MARGIN, top + index * cell + (cell - TEXT_HEIGHT) // 2), name, fill=BLACK, font=font)
        if index % column_step == 0:  # columns by number: names do not fit above narrow cells
            label = str(index)
            x = label_width + index * cell + (cell - _text_width(label, font)) // 2
            draw.text((x, TEXT_HEIGHT), label, fill=BLACK, font=font)
    if cell >= 24:  # the shares in the cells, where a two-digit percentage fits
        for row, column in np.ndindex(size, size):
            text = f"{round(100 * shares[row, column])}"
            x = label_width + column * cell + (cell - _text_width(text, font)) // 2
            y = top + row * cell + (cell - TEXT_HEIGHT) // 2
            draw.text((x, y), text, fill=WHITE, font=font, stroke_width=1, stroke_fill=BLACK)
    draw.text(
        (label_width, top + size * cell + 1), "columns: prediction, by row number", fill=BLACK, font=font
    )
    return np.asarray(image)


def iou_bar_figure(per_class_iou: dict[str, float | None], title: str) -> np.ndarray:
    """Per-class IoU (percent) as horizontal bars in the classes' mask colours, the value at each bar's end.

    Args:
        per_class_iou: class name -> IoU in percent (background first), None where the class is absent.
        title: drawn above the bars.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    font = ImageFont.load_default()
    names = list(per_class_iou)
    label_width = max(_text_width(name, font) for name in names) + 2 * MARGIN
    width = label_width + BAR_LENGTH + 48
    height = TEXT_HEIGHT + MARGIN + len(names) * (BAR_HEIGHT + 2) + MARGIN
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 0), f"{title}: IoU (%) per class", fill=BLACK, font=font)
    colours = colourise_mask(np.arange(len(names))[None])[0]  # (K, 3): mask value i -> its colour
    for index, name in enumerate(names):
        y = TEXT_HEIGHT + MARGIN + index * (BAR_HEIGHT + 2)
        draw.text((MARGIN, y + 1), name, fill=BLACK, font=font)
        value = per_class_iou[name]
        draw.rectangle((label_width, y, label_width + BAR_LENGTH, y + BAR_HEIGHT), outline=GREY)
        if value is None:
            draw.text((label_width + 4, y + 1), "absent", fill=BLACK, font=font)
            continue
        end = label_width + round(BAR_LENGTH * min(max(value, 0.0), 100.0) / 100.0)
        draw.rectangle((label_width, y, end, y + BAR_HEIGHT), fill=tuple(int(c) for c in colours[index]))
        draw.text((label_width + BAR_LENGTH + 4, y + 1), f"{value:.1f}", fill=BLACK, font=font)
    return np.asarray(image)


def write_score_figures(stage_dirs: dict[str, Path], report: dict, figures_dir: Path) -> list[Path]:
    """``confusion_<stage>.png`` and ``iou_<stage>.png`` of every scored stage whose file records a confusion
    matrix (``cam``, ``pseudo_label``, ``seg``), from the folders of the pipeline stages that ran and its
    report."""
    written = []
    for stage, (folder, file_name, keys, title) in CONFUSION_SOURCES.items():
        if folder not in stage_dirs:  # the stage did not run
            continue
        path = stage_dirs[folder] / file_name
        record = read_json_object(path, "the scores of a finished stage") if path.is_file() else {}
        for key in keys:
            record = record.get(key) if isinstance(record, dict) else None
        per_class = report["per_class_iou"].get(stage)
        if record is None or per_class is None:
            continue
        confusion = confusion_figure(np.asarray(record), list(per_class), title)
        written.append(write_grid(confusion, figures_dir / f"confusion_{stage}.png"))
        written.append(write_grid(iou_bar_figure(per_class, title), figures_dir / f"iou_{stage}.png"))
    return written


__all__ = ["CONFUSION_SOURCES", "confusion_figure", "iou_bar_figure", "row_normalised", "write_score_figures"]

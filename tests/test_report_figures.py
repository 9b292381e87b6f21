"""The report's pictures: CAM heat maps and labels, VOC-coloured masks, the grid, its legend, its images."""

import numpy as np
import pytest

from rca_lightning.data.synthetic import SyntheticVOCGenerator
from rca_lightning.data.synthetic_catalogue import SYNTHETIC_CLASS_NAMES
from rca_lightning.data.voc_classes import IGNORE_INDEX, voc_palette
from rca_lightning.imaging.drawing import cam_overlay, colourise_mask, turbo_colours
from rca_lightning.report import figure_grid, legend_strip, pick_figure_images
from rca_lightning.report.figure_grid import (
    GAP,
    LEGEND_LINE_HEIGHT,
    SWATCH_SIZE,
    TITLE_HEIGHT,
    cam_peaks,
    label_panel,
)
from rca_lightning.report.report_figures import cam_panel
from rca_lightning.report.score_figures import (
    BAR_HEIGHT,
    BAR_LENGTH,
    MARGIN,
    TEXT_HEIGHT,
    confusion_figure,
    iou_bar_figure,
    row_normalised,
)

TEXT_ROW = TEXT_HEIGHT + MARGIN  # the first bar's top


def test_heat_map_changes_the_image_where_the_cam_is_high_and_nowhere_else():
    """Acceptance: on a built-in synthetic image, a CAM of 1 in a square shows; where it is 0, the image."""
    image = SyntheticVOCGenerator(SYNTHETIC_CLASS_NAMES, image_size=64).render(np.random.default_rng(0)).image
    cam = np.zeros((1, 64, 64), np.float32)
    cam[0, 16:48, 16:48] = 1.0
    inside = np.zeros((64, 64), bool)
    inside[16:48, 16:48] = True
    difference = np.abs(cam_overlay(image, cam).astype(np.int16) - image)  # (H, W, 3)
    assert difference[inside].mean() > 40
    assert difference[~inside].mean() < 2


def test_heat_map_blends_turbo_of_the_strongest_class_as_much_as_its_score():
    image = np.full((1, 3, 3), 100, np.uint8)
    cams = np.array([[[1.0, 0.2, 0.0]], [[0.5, 0.6, 0.0]]], np.float32)  # two tagged classes
    overlay = cam_overlay(image, cams, strength=0.5)
    turbo = turbo_colours(np.array([[1.0, 0.6]]))[0].astype(np.float64)  # (2, 3)
    expected = [
        100 * 0.5 + turbo[0] * 0.5,  # the first class's score 1
        100 * 0.7 + turbo[1] * 0.3,  # the second class's 0.6 beats the first's 0.2
        np.full(3, 100.0),  # no score: the image
    ]
    assert np.array_equal(overlay[0], np.rint(np.stack(expected)).astype(np.uint8))
    assert np.array_equal(cam_overlay(image, cams[:0]), image)


def test_turbo_runs_from_dark_blue_to_dark_red():
    low, middle, high = turbo_colours(np.array([[0.0, 0.5, 1.0]]))[0].astype(int)
    assert low[2] > low[0] and high[0] > 4 * high[2]  # blue at 0, red at 1
    assert middle.sum() > low.sum() and middle.sum() > high.sum()  # brighter in the middle


def test_cam_peaks_finds_each_maps_highest_pixel():
    cams = np.zeros((2, 4, 5), np.float32)
    cams[0, 1, 3], cams[1, 3, 0] = 0.9, 0.4
    assert cam_peaks(cams).tolist() == [[1, 3], [3, 0]]
    assert cam_peaks(cams[:0]).shape == (0, 2)


def test_labels_are_drawn_where_asked_and_stacked_when_they_meet():
    panel = np.full((60, 80, 3), 128, np.uint8)
    labelled = label_panel(panel, [("disc", 10, 40)])
    rows, columns = np.nonzero((labelled != 128).any(axis=2))
    assert rows.max() < 22 and abs((columns.min() + columns.max()) / 2 - 40) < 4
    assert labelled.max() > 230 and labelled.min() < 25  # white text edged in black
    twice = label_panel(panel, [("disc", 10, 40), ("disc", 10, 40)])
    assert np.nonzero((twice != 128).any(axis=2))[0].max() > rows.max() + 5  # the second moved down


def test_cam_panel_names_the_peaks_and_the_silent_classes():
    image = np.full((32, 32, 3), 90, np.uint8)
    cams = np.zeros((2, 32, 32), np.float32)
    cams[0, 4:12, 4:12] = 1.0  # "square" fires top left; "star" not at all
    panel = cam_panel(image, np.array([1, 4]), cams, SYNTHETIC_CLASS_NAMES, 128)
    plain = np.kron(cam_overlay(image, cams), np.ones((4, 4, 1), np.uint8))  # the same, scaled 4x
    changed = np.any(panel != plain, axis=2)  # (128, 128) where text was drawn
    assert changed[16:48, :80].any()  # the peak's name near (32, 32)
    assert changed[110:].any()  # "no CAM: star" along the bottom
    assert not changed[60:100].any()
    untagged = cam_panel(image, np.zeros(0, np.int64), cams[:0], SYNTHETIC_CLASS_NAMES, 128)
    assert np.array_equal(untagged, np.kron(image, np.ones((4, 4, 1), np.uint8)))


def test_colourise_mask_uses_the_voc_palette_with_ignore():
    mask = np.array([[0, 1, 255]], np.uint8)
    assert np.array_equal(colourise_mask(mask)[0], voc_palette()[[0, 1, 255]])


def test_figure_grid_places_fitted_panels_under_titles():
    tall = np.zeros((20, 10, 3), np.uint8)  # fitted to 8 x 4, padded white
    wide = np.full((5, 10, 3), 7, np.uint8)
    grid = figure_grid([[tall, wide], [wide, tall]], ["a", "b"], panel_size=8)
    step = 8 + GAP
    assert grid.shape == (TITLE_HEIGHT + 2 * step, 2 * step, 3)
    first = grid[TITLE_HEIGHT : TITLE_HEIGHT + 8, :8]
    assert (first[:, :4] == 0).all() and (first[:, 4:] == 255).all()
    second = grid[TITLE_HEIGHT : TITLE_HEIGHT + 8, step : step + 8]
    assert (second[:4] == 7).all() and (second[4:] == 255).all()
    assert (grid[:TITLE_HEIGHT] < 255).any()  # the titles are drawn
    with pytest.raises(ValueError, match="2 panels"):
        figure_grid([[tall]], ["a", "b"])


def swatch_colours(legend: np.ndarray) -> set[tuple[int, int, int]]:
    """Colours filling at least one (SWATCH_SIZE - 2)-pixel square of the strip (the swatches' inside)."""
    inner = SWATCH_SIZE - 2
    windows = np.lib.stride_tricks.sliding_window_view(legend, (inner, inner), axis=(0, 1))  # (.., 3, i, i)
    uniform = (windows == windows[..., :1, :1]).all(axis=(-1, -2)).all(-1)  # (H', W')
    corners = legend[: uniform.shape[0], : uniform.shape[1]][uniform]  # (M, 3) top-left of each square
    return {tuple(int(c) for c in colour) for colour in corners}


def test_legend_shows_a_swatch_of_every_mask_value_present_and_the_heat_scale():
    names = ["background", *SYNTHETIC_CLASS_NAMES]
    legend = legend_strip([0, 2, 5, IGNORE_INDEX, 2], names, width=810)
    assert legend.shape == (LEGEND_LINE_HEIGHT, 810, 3)
    palette = voc_palette()
    shown = swatch_colours(legend)
    for value in (0, 2, 5, IGNORE_INDEX):
        assert tuple(int(c) for c in palette[value]) in shown
    for value in (1, 3, 4, 6):
        assert tuple(int(c) for c in palette[value]) not in shown
    heat = {tuple(int(c) for c in colour) for colour in turbo_colours(np.array([[0.0, 1.0]]))[0]}
    pixels = {tuple(int(c) for c in colour) for colour in legend.reshape(-1, 3)}
    assert heat <= pixels  # both ends of the CAM colour bar
    narrow = legend_strip(range(7), names, width=160)
    assert narrow.shape[0] >= 3 * LEGEND_LINE_HEIGHT and narrow.shape[1] == 160  # wraps onto more lines


def test_picked_images_cover_every_class_richest_first_and_deterministically():
    image_ids = ["a", "b", "c", "d", "e", "f"]
    labels = np.array(
        [
            [1, 0, 0, 0, 0],  # a: one class
            [1, 1, 0, 0, 0],  # b
            [0, 0, 1, 1, 0],  # c
            [1, 1, 1, 0, 0],  # d: the richest
            [0, 0, 0, 1, 1],  # e: the only one with class 4
            [0, 1, 0, 0, 0],
        ],
        np.float32,
    )
    picked = pick_figure_images(image_ids, labels, 3)
    assert picked == ["d", "e", "b"]  # d, then e adds 3 and 4; then b, the first two-class image left
    covered = labels[[image_ids.index(i) for i in picked[:2]]].max(0)
    assert covered.all()
    assert pick_figure_images(image_ids, labels, 3) == picked
    assert pick_figure_images(image_ids, labels[::-1].copy(), 1) == ["c"]  # d's labels sit on "c" now
    assert sorted(pick_figure_images(image_ids, labels, 10)) == image_ids
    assert pick_figure_images([], np.zeros((0, 5)), 4) == []
    with pytest.raises(ValueError, match="one per id"):
        pick_figure_images(image_ids, labels[:2], 2)


def test_confusion_figure_colours_each_cell_by_its_share_of_the_row():
    confusion = np.array([[90, 10, 0], [5, 5, 10], [0, 0, 0]])  # the last class has no pixel
    # By hand: each row over its total; an empty row stays zero.
    expected = np.array([[0.9, 0.1, 0.0], [0.25, 0.25, 0.5], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(row_normalised(confusion), expected)
    figure = confusion_figure(confusion, ["background", "disc", "square"], "test", cell=24)
    colours = turbo_colours(expected)  # (3, 3, 3)
    # Locate the grid by its top-left cell: the first pixel of the expected colour in its row band.
    rows, columns = np.nonzero((figure == colours[0, 0]).all(-1))
    top, left = rows.min(), columns.min()
    for r, c in np.ndindex(3, 3):
        corner = figure[top + r * 24 + 1, left + c * 24 + 1]  # a cell corner: no text there
        np.testing.assert_array_equal(corner, colours[r, c], err_msg=f"cell {r}, {c}")


def test_iou_bars_are_as_long_as_the_iou_and_absent_classes_have_none():
    per_class = {"background": 100.0, "disc": 50.0, "square": None}
    figure = iou_bar_figure(per_class, "test")
    palette = voc_palette()
    row_of = {
        name: TEXT_ROW + index * (BAR_HEIGHT + 2) + BAR_HEIGHT // 2 for index, name in enumerate(per_class)
    }
    disc_pixels = (figure[row_of["disc"]] == palette[1]).all(-1).sum()
    background_pixels = (figure[row_of["background"]] == palette[0]).all(-1).sum()
    assert disc_pixels == pytest.approx(BAR_LENGTH / 2 + 1, abs=1)  # the bar spans 0..100 over BAR_LENGTH
    assert background_pixels >= BAR_LENGTH  # black: the bar and the text
    assert not (figure[row_of["square"]] == palette[2]).all(-1).any()

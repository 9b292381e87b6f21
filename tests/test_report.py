"""The pipeline report: figures gathered from the stage files, the printed table, the figure grid."""

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from rca_lightning.data.voc_classes import voc_palette
from rca_lightning.report import build_report, cam_overlay, colourise_mask, figure_grid, format_report
from rca_lightning.report.figure_grid import GAP, TITLE_HEIGHT

CLASSES = ["disc", "square"]


def write_stage_files(run: Path) -> dict[str, Path]:
    """The summaries the stages write, with hand-picked numbers (fractions where the stages use them)."""
    dirs = {
        name: run / name for name in ("cams", "cam_eval", "pseudo_masks", "pseudo_mask_eval", "segmentation")
    }
    for folder in [run / "classifier", *dirs.values()]:
        folder.mkdir(parents=True)
    dataset = {"root": "/data/synthetic", "class_names": CLASSES}
    (run / "classifier" / "metrics.json").write_text(
        json.dumps({"metrics": {"val/cam_mIoU": 41.5}, "dataset": dataset})
    )
    (dirs["cams"] / "cams.json").write_text(
        json.dumps({"checkpoint": "c.ckpt", "checkpoint_selection": "last"})
    )
    (dirs["cam_eval"] / "eval.json").write_text(
        json.dumps(
            {
                "cams": {
                    "cams_dir": "c",
                    "split": "train",
                    "best_threshold": 0.25,
                    "miou": 0.4,
                    "per_class_iou": {"background": 0.8, "disc": 0.3, "square": None},
                }
            }
        )
    )
    (dirs["pseudo_mask_eval"] / "eval.json").write_text(
        json.dumps(
            {
                "pseudo_masks": {
                    "masks_dir": "m",
                    "split": "train",
                    "miou": 0.5,
                    "ignored_fraction": 0.125,
                    "miou_ignored_as_background": 0.45,
                    "per_class_iou": {"background": 0.9, "disc": 0.1, "square": 0.5},
                }
            }
        )
    )
    seg_metrics = {"test/seg_mIoU": 55.0, "test/IoU_background": 90.0, "test/IoU_disc": 20.0}
    (dirs["segmentation"] / "metrics.json").write_text(
        json.dumps(
            {
                "metrics": seg_metrics,
                "dataset": dataset,
                "checkpoint": "s.ckpt",
                "checkpoint_selection": "last",
            }
        )
    )
    (dirs["segmentation"] / ".hydra").mkdir()
    OmegaConf.save(
        OmegaConf.create({"data": {"val_split": "val"}}), dirs["segmentation"] / ".hydra" / "config.yaml"
    )
    return dirs


def test_build_report_gathers_percentages_from_the_stage_files(tmp_path):
    dirs = write_stage_files(tmp_path)
    report = build_report(tmp_path / "classifier", dirs, {"classifier": 10.0, "cams": 2.0})
    assert report["cam_miou"] == pytest.approx(40.0)
    assert report["cam_threshold"] == 0.25
    assert report["pseudo_label_miou"] == pytest.approx(50.0)
    assert report["pseudo_ignored_fraction"] == 0.125
    assert report["seg_miou"] == 55.0 and report["classifier_val_cam_miou"] == 41.5
    assert report["per_class_iou"]["cam"] == {"background": 80.0, "disc": 30.0, "square": None}
    assert report["per_class_iou"]["pseudo_label"]["square"] == pytest.approx(50.0)
    # A class the segmentation network's metrics do not mention (absent from prediction and truth).
    assert report["per_class_iou"]["seg"] == {"background": 90.0, "disc": 20.0, "square": None}
    assert (report["cam_split"], report["seg_split"]) == ("train", "val")

    table = format_report(report)
    for text in ("40.0", "50.0", "55.0", "41.5", "threshold 0.25", "12.5% of pixels ignored", "square"):
        assert text in table
    assert report["uses_pixel_labels_for_selection"] is False
    assert report["checkpoints"]["classifier"] == {
        "checkpoint": "c.ckpt",
        "checkpoint_selection": "last",
        "uses_pixel_labels": False,
    }
    assert report["checkpoints"]["segmentation"]["checkpoint"] == "s.ckpt"
    assert "no pixel label chose a checkpoint" in table


def test_report_says_when_pixel_labels_chose_a_checkpoint(tmp_path):
    dirs = write_stage_files(tmp_path)
    summary_file = dirs["segmentation"] / "metrics.json"
    summary = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**summary, "checkpoint_selection": "best_val_miou"}))
    report = build_report(tmp_path / "classifier", dirs, {})
    assert report["uses_pixel_labels_for_selection"] is True
    assert report["checkpoints"]["segmentation"]["uses_pixel_labels"] is True
    assert report["checkpoints"]["classifier"]["uses_pixel_labels"] is False
    table = format_report(report)
    assert "checkpoints chosen with pixel labels: segmentation" in table and "weights: best_val_miou" in table


def test_build_report_names_the_missing_stage_file(tmp_path):
    dirs = write_stage_files(tmp_path)
    (dirs["pseudo_mask_eval"] / "eval.json").unlink()
    with pytest.raises(FileNotFoundError, match="pseudo_mask_eval/eval.json"):
        build_report(tmp_path / "classifier", dirs, {})


def test_cam_overlay_tints_each_pixel_with_its_strongest_class():
    image = np.full((1, 3, 3), 100, np.uint8)
    cams = np.array([[[1.0, 0.2, 0.0]], [[0.5, 0.6, 0.0]]], np.float32)  # classes 0 and 2
    overlay = cam_overlay(image, cams, np.array([0, 2]), strength=0.5)
    palette = voc_palette().astype(np.float64)
    expected = [
        100 * 0.5 + palette[1] * 0.5,  # class 0 wins with score 1
        100 * 0.7 + palette[3] * 0.3,  # class 2 wins with score 0.6
        np.full(3, 100.0),  # no score: the image
    ]
    assert np.array_equal(overlay[0], np.rint(np.stack(expected)).astype(np.uint8))
    assert np.array_equal(cam_overlay(image, cams[:0], np.array([], np.int64)), image)


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

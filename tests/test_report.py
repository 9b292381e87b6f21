"""The pipeline report: figures gathered from the stage files, the printed table, the weak classes."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rca_lightning.report import build_report, format_report, weak_classes
from rca_lightning.utils.errors import InvalidData, MissingInput

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
    assert report["weak_classes"] == {} and report["weak_class_iou"] == 5.0
    assert "no class below 5 IoU at any stage" in table and "!" not in table


def update_json(path: Path, update) -> None:
    record = json.loads(path.read_text())
    update(record)
    path.write_text(json.dumps(record))


def add_counts(run: Path, dirs: dict[str, Path]) -> None:
    """What the stages record beside their scores: the images and pixels behind each class's score."""

    def classifier(record: dict) -> None:
        record["metrics"] |= {"val/mAP": 83.4, "val/AP_disc": 83.4}
        record["metrics"] |= {"val/AP_images_disc": 3.0, "val/AP_images_square": 0.0}

    def cams(record: dict) -> None:
        record["cams"]["per_class_images"] = {"background": 12, "disc": 7, "square": 0}
        record["cams"]["per_class_pixels"] = {"background": 40_000, "disc": 3210, "square": 0}

    def masks(record: dict) -> None:
        record["pseudo_masks"]["per_class_images"] = {"background": 12, "disc": 7, "square": 0}
        record["pseudo_masks"]["per_class_pixels"] = {"background": 35_000, "disc": 3000, "square": 0}

    def segmentation(record: dict) -> None:
        record["test_confusion"] = [[5000, 10, 0], [20, 800, 0], [0, 0, 0]]
        record["test_images"] = [4, 3, 0]

    update_json(run / "classifier" / "metrics.json", classifier)
    update_json(dirs["cam_eval"] / "eval.json", cams)
    update_json(dirs["pseudo_mask_eval"] / "eval.json", masks)
    update_json(dirs["segmentation"] / "metrics.json", segmentation)


def test_every_score_says_what_it_covers_and_absent_classes_print_no_number(tmp_path):
    dirs = write_stage_files(tmp_path)
    add_counts(tmp_path, dirs)
    report = build_report(tmp_path / "classifier", dirs, {})
    assert report["per_class_images"] == {
        "cam": {"background": 12, "disc": 7, "square": 0},
        "pseudo_label": {"background": 12, "disc": 7, "square": 0},
        "seg": {"background": 4, "disc": 3, "square": 0},
    }
    assert report["per_class_pixels"]["pseudo_label"]["background"] == 35_000
    assert report["per_class_pixels"]["seg"] == {"background": 5010, "disc": 820, "square": 0}  # row sums
    assert (report["classifier_val_map"], report["classifier_val_map_classes"]) == (83.4, 1)

    table = format_report(report)
    assert "CAMs: last; mAP 83.4 over 1/2 classes" in table
    header = next(line for line in table.splitlines() if line.lstrip().startswith("IoU (%)"))
    assert header.split() == [
        "IoU",
        "(%)",
        "CAM",
        "pseudo",
        "seg",
        "images",
        "(train)",
        "pixels",
        "(train)",
        "images",
        "(val)",
        "pixels",
        "(val)",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.split()}
    assert rows["background"] == ["80.0", "90.0", "90.0", "12", "40.0k", "4", "5010"]
    assert rows["disc"] == ["30.0", "10.0", "20.0", "7", "3210", "3", "820"]
    # square: no IoU at the CAM and seg stages (absent from prediction and ground truth), none of its pixels.
    assert rows["square"] == ["absent", "50.0", "absent", "0", "0", "0", "0"]


def test_a_run_without_counts_prints_scores_only(tmp_path):
    # eval.json and metrics.json written before the counts were recorded: the scores, no count columns.
    report = build_report(tmp_path / "classifier", write_stage_files(tmp_path), {})
    assert report["per_class_images"] == report["per_class_pixels"] == {}
    assert report["classifier_val_map"] is None  # its mAP, if any, counted absent classes as 0
    header = next(line for line in format_report(report).splitlines() if line.startswith("IoU (%)"))
    assert header.split() == ["IoU", "(%)", "CAM", "pseudo", "seg"]


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
    with pytest.raises(MissingInput, match="pseudo_mask_eval/eval.json not found: expected the summary"):
        build_report(tmp_path / "classifier", dirs, {})


def test_report_flags_classes_below_5_iou_at_some_stage(tmp_path):
    dirs = write_stage_files(tmp_path)
    eval_file = dirs["pseudo_mask_eval"] / "eval.json"
    evaluation = json.loads(eval_file.read_text())
    evaluation["pseudo_masks"]["per_class_iou"]["disc"] = 0.02  # 2 %: below 5 at the pseudo-label stage
    eval_file.write_text(json.dumps(evaluation))
    report = build_report(tmp_path / "classifier", dirs, {})
    # square (None, 50, None) and background stay unflagged; disc carries all three stages' values.
    assert report["weak_classes"] == {"disc": {"cam": 30.0, "pseudo_label": pytest.approx(2.0), "seg": 20.0}}
    assert json.loads(json.dumps(report))["weak_classes"]["disc"]["seg"] == 20.0  # report.json keeps it

    table = format_report(report)
    assert "classes below 5 IoU: disc (cam 30.0, pseudo 2.0, seg 20.0)" in table
    rows = {line.split()[0]: line for line in table.splitlines() if line.split()}
    assert "!disc" in rows and "square" in rows and "!square" not in rows and "background" in rows


def test_weak_classes_skips_absent_classes_and_flags_zero():
    per_class_iou = {
        "cam": {"background": 70.0, "ring": 0.4, "star": None, "cross": 12.0},
        "pseudo_label": {"background": 60.0, "ring": 0.0, "star": None, "cross": 4.99},
        "seg": {"background": 80.0, "star": None, "cross": 30.0},  # ring: no value at all
    }
    assert weak_classes(per_class_iou) == {
        "ring": {"cam": 0.4, "pseudo_label": 0.0, "seg": None},
        "cross": {"cam": 12.0, "pseudo_label": 4.99, "seg": 30.0},
    }
    assert weak_classes(per_class_iou, below=0.1) == {"ring": {"cam": 0.4, "pseudo_label": 0.0, "seg": None}}


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("classifier/metrics.json", {"metrics": {}}, r"dataset\.class_names is None; expected a list"),
        ("classifier/metrics.json", {"metrics": [], "dataset": {}}, r"metrics is \[\]; expected a mapping"),
        ("classifier/metrics.json", [1, 2], r"holds an array"),
        ("cam_eval/eval.json", {"cams": {"miou": 0.4}}, r"cams is .*; expected a mapping with \['per_class"),
        ("pseudo_mask_eval/eval.json", {"pseudo_masks": 3}, r"pseudo_masks is 3; expected a mapping"),
        ("segmentation/metrics.json", {"metrics": None}, r"metrics is None; expected a mapping"),
        (
            "cam_eval/eval.json",
            {"cams": {"miou": 0.4, "per_class_iou": {}, "per_class_images": {"disc": -1}}},
            r"cams\.per_class_images is \{'disc': -1\}; expected a mapping of class names to counts",
        ),
        (
            "segmentation/metrics.json",
            {"metrics": {"test/seg_mIoU": 1.0}, "test_confusion": [[1, 2]]},
            r"test_confusion is \[\[1, 2\]\]; expected 3 rows of 3 counts",
        ),
        (
            "segmentation/metrics.json",
            {"metrics": {"test/seg_mIoU": 1.0}, "test_images": [1, -2, 0]},
            r"test_images is \[1, -2, 0\]; expected 3 counts",
        ),
    ],
)
def test_a_damaged_stage_summary_is_one_line_naming_the_file(tmp_path, file, content, message):
    dirs = write_stage_files(tmp_path)
    (tmp_path / file).write_text(json.dumps(content))
    with pytest.raises(InvalidData, match=rf"^{tmp_path / file}: {message}") as caught:
        build_report(tmp_path / "classifier", dirs, {})
    assert "\n" not in str(caught.value)

"""The pipeline's report: every stage's headline figures gathered from the files the stages wrote.

All mIoU / IoU values of the report are percentages. ``cam_miou`` and ``pseudo_label_miou`` are scored on the
CAM split (the split whose pseudo masks train the segmentation network), ``seg_miou`` on the segmentation
stage's val split through its evaluation path (test-time augmentation, optional CRF). Every per-class IoU
comes with what it covers (the images whose ground truth holds the class, the ground-truth pixels it was
scored on), and a class with no IoU (absent from prediction and ground truth) is printed as ``absent``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from rich import box
from rich.console import Console
from rich.table import Table

from rca_lightning.pseudo.stage_records import read_cams_record
from rca_lightning.utils.checkpoint_selection import uses_pixel_labels
from rca_lightning.utils.errors import InvalidData, MissingInput
from rca_lightning.utils.state_files import read_json_object

WEAK_CLASS_IOU = 5.0
"""A class with an IoU (%) below this at some stage is flagged as weak in the report."""
STAGE_LABELS = {"cam": "cam", "ir_label": "IR", "pseudo_label": "pseudo", "seg": "seg"}
"""The report's per-stage IoU keys and their short names in the printed table."""


# What each stage summary the report reads must hold: file name -> its entries that are mappings.
_SUMMARY_MAPPINGS = {"metrics.json": ("metrics",), "eval.json": ()}
# Entries of an evaluation's record (eval.json's "cams" / "pseudo_masks") that the report reads.
_EVALUATION_KEYS = ("per_class_iou", "miou")
# Per-class counts an evaluation records (not in eval.json files written before they were).
_COUNT_KEYS = ("per_class_images", "per_class_pixels")


def _read_json(path: Path) -> dict:
    """A finished stage's summary, its mappings checked; MissingInput / InvalidData naming the file."""
    if not path.is_file():
        raise MissingInput(f"{path} not found: expected the summary of a finished pipeline stage")
    record = read_json_object(path, "the summary of a finished stage")
    entries = [*_SUMMARY_MAPPINGS.get(path.name, ()), *(k for k in ("cams", "pseudo_masks") if k in record)]
    for entry in entries:
        value = record.get(entry)
        missing = [key for key in _EVALUATION_KEYS if key not in value] if isinstance(value, dict) else None
        if missing is None or (entry != "metrics" and missing):
            raise InvalidData(
                f"{path}: {entry} is {value!r:.60}; expected a mapping"
                + (f" with {list(_EVALUATION_KEYS)}" if entry != "metrics" else "")
                + " (the summary of a finished stage)"
            )
        for key in _COUNT_KEYS if entry != "metrics" else ():
            counts = value.get(key, {})
            if not isinstance(counts, dict) or not all(_is_count(count) for count in counts.values()):
                raise InvalidData(
                    f"{path}: {entry}.{key} is {counts!r:.60}; expected a mapping of class names to counts"
                )
    return record


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _confusion_row_sums(path: Path, confusion: object, size: int) -> list[int] | None:
    """The ground-truth pixels per class of a recorded (K, K) confusion matrix (None when not recorded);
    InvalidData naming ``path`` when it is not K rows of K counts."""
    if confusion is None:
        return None
    rows = confusion if isinstance(confusion, list) else []
    shaped = len(rows) == size and all(isinstance(row, list) and len(row) == size for row in rows)
    if not shaped or not all(_is_count(count) for row in rows for count in row):
        raise InvalidData(
            f"{path}: test_confusion is {confusion!r:.60}; expected {size} rows of {size} counts"
        )
    return np.asarray(rows, np.int64).sum(1).tolist()


def _percent(per_class: dict[str, float | None]) -> dict[str, float | None]:
    return {name: None if value is None else 100 * value for name, value in per_class.items()}


def _seg_per_class(metrics: dict[str, float], class_names: list[str]) -> dict[str, float | None]:
    return {name: metrics.get(f"test/IoU_{name}") for name in ["background", *class_names]}


def _classifier_map(metrics: dict[str, float], class_names: list[str]) -> tuple[float | None, int | None]:
    """The classifier's val mAP and the number of classes it averages (those with a tagged val image), or
    (None, None) for a run that did not record the counts (its mAP counted an absent class as 0)."""
    counts = [metrics.get(f"val/AP_images_{name}") for name in class_names]
    if None in counts:
        return None, None
    return metrics.get("val/mAP"), sum(count > 0 for count in counts)


def _checkpoint_record(checkpoint: str | None, selection: str) -> dict:
    return {
        "checkpoint": checkpoint,
        "checkpoint_selection": selection,
        "uses_pixel_labels": uses_pixel_labels(selection),
    }


def weak_classes(
    per_class_iou: dict[str, dict[str, float | None]], below: float = WEAK_CLASS_IOU
) -> dict[str, dict[str, float | None]]:
    """The classes whose IoU falls below ``below`` at some stage, with their IoU at every stage.

    Args:
        per_class_iou: stage (``cam``, ``pseudo_label``, ``seg``: those that ran) -> class -> IoU (%), None
            where the class is absent from both prediction and ground truth (never flagged).
        below: the IoU (%) under which a class is weak.

    Returns:
        class -> stage -> IoU (None where that stage has no value), in the stages' class order.
    """
    flagged = {}
    names = next(iter(per_class_iou.values()), {})
    for name in names:
        values = {stage: per_class_iou[stage].get(name) for stage in STAGE_LABELS if stage in per_class_iou}
        if any(value is not None and value < below for value in values.values()):
            flagged[name] = values
    return flagged


def _optional_json(stage_dirs: dict[str, Path], stage: str, file_name: str) -> dict | None:
    return _read_json(stage_dirs[stage] / file_name) if stage in stage_dirs else None


def build_report(
    classifier_dir: Path,
    stage_dirs: dict[str, Path],
    stage_seconds: dict[str, float],
    pixel_label_settings: list[str] | None = None,
) -> dict:
    """Gather the report of a pipeline run from the stages that ran.

    Args:
        classifier_dir: the classifier's rca-train folder (``metrics.json``).
        stage_dirs: stage name -> folder, for those of ``cams``, ``cam_eval``, ``pseudo_masks``,
            ``pseudo_mask_eval`` and ``segmentation`` that ran (the figures of the others are None).
        stage_seconds: stage name -> wall time of the stages this run (or an earlier one) executed.
        pixel_label_settings: settings of the run the user asked to choose with pixel labels, stated.

    Returns:
        ``stages`` (the stages that ran, the classifier first), ``seeds`` (what the CAM files hold: cams,
        attention or max), ``cam_miou`` (those seeds' mIoU), ``cam_threshold``, ``ir_label_miou`` and
        ``ir_ignored_fraction`` (IRN's relation labels, with ``refine=random_walk``), ``pseudo_label_miou``,
        ``pseudo_ignored_fraction``, ``seg_miou``, ``classifier_val_cam_miou``, ``classifier_val_map`` (over
        the classes with a tagged val image, ``classifier_val_map_classes`` of them; None for a classifier
        that did not record them), ``per_class_iou``
        ({cam, ir_label, pseudo_label, seg} that ran -> class -> IoU, None where absent from prediction and
        ground truth), what each IoU covers: ``per_class_images`` (stage -> class -> the images whose ground
        truth holds it; not recorded for seg) and ``per_class_pixels`` (stage -> class -> the ground-truth
        pixels it was scored on), ``weak_class_iou`` (``WEAK_CLASS_IOU``) and
        ``weak_classes`` (class -> stage -> IoU of the classes below it at some stage),
        ``stage_seconds``, ``checkpoints`` (for the classifier and the segmentation network: the file used
        and how it was chosen), ``settings_chosen_with_pixel_labels``, ``uses_pixel_labels_for_selection``
        (whether any of those choices or settings used pixel labels), and where things are (``folders``,
        ``dataset``, ``cam_split``, ``seg_split``).
    """
    classifier = _read_json(classifier_dir / "metrics.json")
    cam_run = read_cams_record(stage_dirs["cams"] / "cams.json") if "cams" in stage_dirs else None
    cam_eval = (_optional_json(stage_dirs, "cam_eval", "eval.json") or {}).get("cams")
    mask_eval = (_optional_json(stage_dirs, "pseudo_mask_eval", "eval.json") or {}).get("pseudo_masks")
    # IRN's relation labels (refine=random_walk), scored like masks: on their labelled pixels.
    ir_eval = (_optional_json(stage_dirs, "ir_label_eval", "eval.json") or {}).get("pseudo_masks")
    segmentation = _optional_json(stage_dirs, "segmentation", "metrics.json")
    dataset = classifier.get("dataset")
    class_names = dataset.get("class_names") if isinstance(dataset, dict) else None
    if not isinstance(class_names, list) or not all(isinstance(name, str) for name in class_names):
        raise InvalidData(
            f"{classifier_dir / 'metrics.json'}: dataset.class_names is {class_names!r:.60}; expected a "
            "list of class names (what rca-train writes)"
        )
    classifier_map, classifier_map_classes = _classifier_map(classifier["metrics"], class_names)
    checkpoints = {}
    if cam_run:
        checkpoints["classifier"] = _checkpoint_record(cam_run.checkpoint, cam_run.checkpoint_selection)
    per_class_iou, per_class_images, per_class_pixels = {}, {}, {}
    for stage, evaluation in (("cam", cam_eval), ("ir_label", ir_eval), ("pseudo_label", mask_eval)):
        if evaluation:
            per_class_iou[stage] = _percent(evaluation["per_class_iou"])
            if "per_class_images" in evaluation:
                per_class_images[stage] = evaluation["per_class_images"]
            if "per_class_pixels" in evaluation:
                per_class_pixels[stage] = evaluation["per_class_pixels"]
    seg_metrics, seg_split = {}, None
    if segmentation is not None:
        seg_metrics = segmentation["metrics"]
        if "test/seg_mIoU" not in seg_metrics:
            raise InvalidData(
                f"{stage_dirs['segmentation'] / 'metrics.json'} has no test/seg_mIoU: the segmentation "
                "stage must run with evaluate=true"
            )
        checkpoints["segmentation"] = _checkpoint_record(
            segmentation.get("checkpoint"), segmentation.get("checkpoint_selection", "last")
        )
        per_class_iou["seg"] = _seg_per_class(seg_metrics, class_names)
        names = list(per_class_iou["seg"])
        pixels = _confusion_row_sums(
            stage_dirs["segmentation"] / "metrics.json", segmentation.get("test_confusion"), len(names)
        )
        if pixels is not None:
            per_class_pixels["seg"] = dict(zip(names, pixels, strict=True))
        images = segmentation.get("test_images")
        if images is not None:
            if not (isinstance(images, list) and len(images) == len(names) and all(map(_is_count, images))):
                raise InvalidData(
                    f"{stage_dirs['segmentation'] / 'metrics.json'}: test_images is {images!r:.60}; expected "
                    f"{len(names)} counts"
                )
            per_class_images["seg"] = dict(zip(names, images, strict=True))
        seg_split = OmegaConf.load(stage_dirs["segmentation"] / ".hydra" / "config.yaml").data.val_split
    return {
        "stages": ["classifier", *stage_dirs],
        "uses_pixel_labels_for_selection": bool(pixel_label_settings)
        or any(record["uses_pixel_labels"] for record in checkpoints.values()),
        "checkpoints": checkpoints,
        "settings_chosen_with_pixel_labels": list(pixel_label_settings or []),
        "seeds": cam_run.seeds if cam_run else None,
        "cam_miou": 100 * cam_eval["miou"] if cam_eval else None,
        "cam_threshold": cam_eval["best_threshold"] if cam_eval else None,
        "ir_label_miou": 100 * ir_eval["miou"] if ir_eval else None,
        "ir_ignored_fraction": ir_eval["ignored_fraction"] if ir_eval else None,
        "pseudo_label_miou": 100 * mask_eval["miou"] if mask_eval else None,
        "pseudo_ignored_fraction": mask_eval["ignored_fraction"] if mask_eval else None,
        "pseudo_label_miou_ignored_as_background": (
            100 * mask_eval["miou_ignored_as_background"] if mask_eval else None
        ),
        "seg_miou": seg_metrics.get("test/seg_mIoU"),
        "classifier_val_cam_miou": classifier["metrics"].get("val/cam_mIoU"),
        "classifier_val_map": classifier_map,
        "classifier_val_map_classes": classifier_map_classes,
        "per_class_iou": per_class_iou,
        "per_class_images": per_class_images,
        "per_class_pixels": per_class_pixels,
        "weak_class_iou": WEAK_CLASS_IOU,
        "weak_classes": weak_classes(per_class_iou),
        "stage_seconds": dict(stage_seconds),
        "cam_split": cam_eval["split"] if cam_eval else None,
        "seg_split": seg_split,
        "dataset": classifier["dataset"],
        "folders": {
            "classifier": str(classifier_dir),
            "cams": cam_eval["cams_dir"] if cam_eval else None,
            "pseudo_masks": mask_eval["masks_dir"] if mask_eval else None,
            "segmentation_checkpoint": segmentation.get("checkpoint") if segmentation else None,
        },
    }


def _render(table: Table) -> str:
    """A rich table as plain text (no colour codes: the same on a terminal, in a log and in a pipe)."""
    # force_jupyter=False: in a notebook rich would display the table itself instead of writing to the file.
    console = Console(file=io.StringIO(), width=120, color_system=None, highlight=False, force_jupyter=False)
    console.print(table)
    return console.file.getvalue().rstrip("\n")


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _iou_cell(value: float | None) -> str:
    """A per-class IoU; a class absent from prediction and ground truth has none (left out of the mIoU)."""
    return "absent" if value is None else f"{value:.1f}"


def _count_cell(count: int | None) -> str:
    """A count, exact below 10,000, else in thousands / millions / billions (report.json has it exact)."""
    if count is None:
        return "-"
    if count < 10_000:
        return str(count)
    size, unit = next((size, unit) for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if count >= size)
    return f"{count / size:.1f}{unit}"


def _coverage_columns(report: dict) -> list[tuple[str, dict[str, int]]]:
    """(header, class -> count) of the counts the per-class table prints: the images and ground-truth pixels
    of the CAM split (the first of its scored stages that recorded them; the pseudo masks' own pixels leave
    out those they ignore), then those of the segmentation's split."""
    cam_columns, seg_columns = [], []
    for key, what in (("per_class_images", "images"), ("per_class_pixels", "pixels")):
        recorded = report.get(key) or {}
        stage = next((stage for stage in ("cam", "ir_label", "pseudo_label") if stage in recorded), None)
        if stage is not None:
            cam_columns.append((f"{what} ({report['cam_split']})", recorded[stage]))
        if "seg" in recorded:
            seg_columns.append((f"{what} ({report['seg_split']})", recorded["seg"]))
    return cam_columns + seg_columns


def _weak_line(report: dict) -> str:
    below = f"{report['weak_class_iou']:g} IoU"
    flagged = report["weak_classes"]
    if not flagged:
        return f"no class below {below} at any stage"
    described = []
    for name, values in flagged.items():
        stages = ", ".join(f"{STAGE_LABELS[stage]} {_iou_cell(value)}" for stage, value in values.items())
        described.append(f"{name} ({stages})")
    return f"classes below {below}: " + ", ".join(described)


def _ignored(fraction: float) -> str:
    return f"{100 * fraction:.1f}% of pixels ignored"


def _stage_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(name, mIoU, detail, stage) of the classifier and of each scored stage that ran."""
    checkpoints, split = report["checkpoints"], report["cam_split"]
    classifier_choice = checkpoints.get("classifier", {}).get("checkpoint_selection", "not used")
    detail = f"last epoch, one scale; CAMs: {classifier_choice}"
    if report.get("classifier_val_map") is not None:
        # The mean covers the classes with a tagged val image only.
        of = f"{report['classifier_val_map_classes']}/{len(report['dataset']['class_names'])}"
        detail += f"; mAP {report['classifier_val_map']:.1f} over {of} classes"
    rows = [("classifier (val)", _cell(report["classifier_val_cam_miou"]), detail, "classifier")]
    # headline key -> name, detail (computed only for a stage that ran), stage.
    scored = {
        "cam_miou": (
            f"seeds: {report['seeds']} ({split})",
            lambda: f"background threshold {report['cam_threshold']:.2f}",
            "cams",
        ),
        "ir_label_miou": (
            f"relation labels ({split})",
            lambda: _ignored(report["ir_ignored_fraction"]),
            "ir_labels",
        ),
        "pseudo_label_miou": (
            f"pseudo masks ({split})",
            lambda: _ignored(report["pseudo_ignored_fraction"]),
            "pseudo_masks",
        ),
        "seg_miou": (
            f"segmentation ({report['seg_split']})",
            lambda: f"weights: {checkpoints['segmentation']['checkpoint_selection']}",
            "segmentation",
        ),
    }
    for key, (name, detail, stage) in scored.items():
        if report.get(key) is not None:
            rows.append((name, _cell(report[key]), detail(), stage))
    return rows


def format_report(report: dict) -> str:
    """The report as text: rich tables of the stages that ran and of the per-class IoU (``!`` marks a weak
    class, ``absent`` one with no IoU) with the images and ground-truth pixels of each split behind it, then
    the checkpoint choices."""
    seconds = report["stage_seconds"]
    rows = _stage_rows(report)
    stages = Table("stage", "mIoU (%)", "", "seconds", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in (1, 3):
        stages.columns[column].justify = "right"
    for name, miou, detail, stage in rows:
        stages.add_row(name, miou, detail, _cell(seconds.get(stage), 0))
    other = {name: value for name, value in seconds.items() if name not in {r[3] for r in rows}}
    lines = [_render(stages)]
    if other:
        lines.append("other stages (s): " + ", ".join(f"{name} {value:.0f}" for name, value in other.items()))
    per_class = report["per_class_iou"]
    scored = [stage for stage in STAGE_LABELS if stage in per_class]
    if scored:
        headers = [{"cam": "CAM"}.get(stage, STAGE_LABELS[stage]) for stage in scored]
        coverage = _coverage_columns(report)
        headers += [header for header, _ in coverage]
        classes = Table("IoU (%)", *headers, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in range(1, len(headers) + 1):
            classes.columns[column].justify = "right"
        for name in per_class[scored[0]]:
            marker = "!" if name in report["weak_classes"] else ""
            scores = [_iou_cell(per_class[stage].get(name)) for stage in scored]
            classes.add_row(
                marker + name, *scores, *(_count_cell(counts.get(name)) for _, counts in coverage)
            )
        lines += ["", _render(classes), _weak_line(report)]
    checkpoints = report["checkpoints"]
    chosen_by_pixels = [stage for stage, record in checkpoints.items() if record["uses_pixel_labels"]]
    lines.append("")
    settings = report.get("settings_chosen_with_pixel_labels", [])
    lines.append(
        "checkpoints chosen with pixel labels: " + ", ".join(chosen_by_pixels)
        if chosen_by_pixels
        else "no pixel label chose a checkpoint" + ("" if settings else " (weakly supervised throughout)")
    )
    lines += [f"chosen with pixel labels: {setting}" for setting in settings]
    return "\n".join(lines)


__all__ = ["WEAK_CLASS_IOU", "build_report", "format_report", "weak_classes"]

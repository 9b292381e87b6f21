"""CAM and pseudo-mask scoring against slow references, and the three stages run as console scripts (in this
process: ``tests/console_runs.py``)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rca_lightning.imaging.palette_png import write_palette_png
from rca_lightning.pseudo.cam_evaluation import evaluate_cams, evaluate_masks, sweep_thresholds
from rca_lightning.pseudo.cam_writer import cam_path, load_cam_file
from rca_lightning.pseudo.pseudo_mask_writer import mask_path
from rca_lightning.utils.errors import InvalidData, MissingInput
from tests.console_runs import run_in_process
from tests.references import reference_cam_sweep, reference_mask_scores
from tests.stage_helpers import make_dataset_with_cams, make_training_run

CLASS_NAMES = ["disc", "square", "triangle"]


@pytest.fixture
def dataset_with_cams(tmp_path):
    cams_dir = tmp_path / "cams"
    cams_dir.mkdir()
    return make_dataset_with_cams(tmp_path / "voc", cams_dir), cams_dir


def assert_iou_equal(fast: dict, reference: list[float]) -> None:
    for value, expected in zip(fast.values(), reference, strict=True):
        assert (value is None and math.isnan(expected)) or abs(value - expected) < 1e-9


def reference_counts(
    targets: list[torch.Tensor], masks: list[torch.Tensor] | None = None
) -> tuple[list[int], list[int]]:
    """Per label 0..3: the images whose ground truth holds it (255 left out), and its ground-truth pixels
    where the mask (if any) is not 255, pixel by pixel."""
    images, pixels = [0] * 4, [0] * 4
    for index, target in enumerate(targets):
        seen = set()
        for i in range(target.shape[0]):
            for j in range(target.shape[1]):
                truth = int(target[i, j])
                if truth == 255:
                    continue
                seen.add(truth)
                if masks is None or int(masks[index][i, j]) != 255:
                    pixels[truth] += 1
        for label in seen:
            images[label] += 1
    return images, pixels


def test_sweep_thresholds_include_stop_without_drift():
    thresholds = sweep_thresholds(0.0, 0.6, 0.01)
    assert len(thresholds) == 61 and thresholds[-1].item() == pytest.approx(0.6)


def test_cam_sweep_matches_pixel_by_pixel_reference(dataset_with_cams):
    dataset, cams_dir = dataset_with_cams
    ids = dataset.image_ids[:5]
    thresholds = [0.05, 0.2, 0.35, 0.5, 0.65, 0.8]
    result = evaluate_cams(
        cams_dir,
        ids,
        [dataset.mask_path(i) for i in ids],
        CLASS_NAMES,
        torch.tensor(thresholds),
        progress=False,
    )
    scores, targets = [], []
    for image_id in ids:
        classes, cams = load_cam_file(cam_path(cams_dir, image_id))
        full = torch.zeros(3, *cams.shape[1:])
        full[classes] = torch.from_numpy(cams)
        scores.append(full)
        targets.append(torch.from_numpy(np.array(Image.open(dataset.mask_path(image_id)))))
    mious, best, best_iou = reference_cam_sweep(scores, targets, thresholds)
    assert list(result["sweep"].values()) == pytest.approx(mious, abs=1e-9)
    assert result["best_threshold"] == pytest.approx(thresholds[best])
    assert result["miou"] == pytest.approx(mious[best], abs=1e-9)
    assert 0 < best < len(thresholds) - 1, "the hand-made CAMs have an interior best threshold"
    assert list(result["per_class_iou"]) == ["background", *CLASS_NAMES]
    assert_iou_equal(result["per_class_iou"], best_iou)
    assert result["num_images"] == 5
    images, pixels = reference_counts(targets)
    assert list(result["per_class_images"].values()) == images
    assert list(result["per_class_pixels"].values()) == pixels
    assert list(result["per_class_pixels"]) == ["background", *CLASS_NAMES]


def test_a_class_absent_from_the_images_scored_has_no_iou_and_covers_nothing(dataset_with_cams):
    dataset, cams_dir = dataset_with_cams
    ids = [i for i, tags in zip(dataset.image_ids, dataset.labels, strict=True) if not tags[2]]
    assert 0 < len(ids) < len(dataset.image_ids), "the synthetic split has images without a triangle"
    result = evaluate_cams(cams_dir, ids, [dataset.mask_path(i) for i in ids], CLASS_NAMES, progress=False)
    assert result["per_class_iou"]["triangle"] is None
    assert result["per_class_images"]["triangle"] == result["per_class_pixels"]["triangle"] == 0
    assert result["per_class_images"]["background"] == len(ids)
    assert result["miou"] == pytest.approx(
        np.mean([v for v in result["per_class_iou"].values() if v is not None]), abs=1e-12
    )


def test_mask_scores_match_reference_and_count_ignored_pixels(dataset_with_cams, tmp_path):
    dataset, _ = dataset_with_cams
    ids = dataset.image_ids[:4]
    rng = np.random.default_rng(0)
    masks, targets = [], []
    for image_id in ids:
        truth = np.array(Image.open(dataset.mask_path(image_id)))
        mask = np.where(truth == 255, 0, truth).astype(np.uint8)
        mask[rng.random(mask.shape) < 0.1] = 2  # wrong labels
        mask[rng.random(mask.shape) < 0.2] = 255  # ignored
        write_palette_png(mask_path(tmp_path / "masks", image_id), mask)
        masks.append(torch.from_numpy(mask))
        targets.append(torch.from_numpy(truth))
    result = evaluate_masks(
        tmp_path / "masks",
        ids,
        [dataset.mask_path(i) for i in ids],
        CLASS_NAMES,
        num_workers=2,
        progress=False,
    )
    iou, ignored = reference_mask_scores(masks, targets, 4)
    assert_iou_equal(result["per_class_iou"], iou)
    assert result["miou"] == pytest.approx(np.nanmean(iou), abs=1e-12)
    assert result["ignored_fraction"] == pytest.approx(ignored, abs=1e-12) and 0.15 < ignored < 0.25
    images, pixels = reference_counts(targets, masks)  # the pixels scored: the masks' 255 left out
    assert list(result["per_class_images"].values()) == images
    assert list(result["per_class_pixels"].values()) == pixels
    background = [torch.where(m == 255, 0, m) for m in masks]
    assert result["miou_ignored_as_background"] == pytest.approx(
        np.nanmean(reference_mask_scores(background, targets, 4)[0]), abs=1e-12
    )
    bad = np.zeros_like(masks[0].numpy())
    bad[0, 0] = 7
    write_palette_png(mask_path(tmp_path / "masks", ids[0]), bad)
    with pytest.raises(InvalidData, match=f"{ids[0]}.png: value 7, expected class indices 0..3 or 255"):
        evaluate_masks(
            tmp_path / "masks", ids, [dataset.mask_path(i) for i in ids], CLASS_NAMES, progress=False
        )


def test_missing_cam_file_is_named(dataset_with_cams):
    dataset, cams_dir = dataset_with_cams
    ids = dataset.image_ids
    cam_path(cams_dir, ids[1]).unlink()
    with pytest.raises(MissingInput, match=f"1 of 12 CAM files.*{ids[1]}.npz"):
        evaluate_cams(cams_dir, ids, [dataset.mask_path(i) for i in ids], CLASS_NAMES, progress=False)


@pytest.mark.slow
def test_console_scripts_cams_pseudo_eval(tmp_path, monkeypatch):
    train_dir = tmp_path / "train"
    make_training_run(train_dir, tmp_path / "cache")
    monkeypatch.chdir(tmp_path)  # the scripts' working folder: nothing but their run folders may appear there

    def run(script: str, *overrides: str) -> None:
        result = run_in_process(script, *overrides, f"hydra.run.dir={tmp_path / script}")
        assert result.returncode == 0, result.stderr[-4000:]

    run(
        "rca-cams",
        f"train_dir={train_dir}",
        "trainer=cpu",
        "scales=[1.0,2.0]",
        "trainer.enable_progress_bar=false",
    )
    cams_dir = tmp_path / "rca-cams" / "cams"
    run("rca-pseudo", f"cams_dir={cams_dir}", "num_workers=2", "progress=false")
    masks_dir = tmp_path / "rca-pseudo" / "pseudo_masks"
    run("rca-eval", f"cams_dir={cams_dir}", f"masks_dir={masks_dir}", "progress=false")

    assert len(list(cams_dir.glob("*.npz"))) == 12 and len(list(masks_dir.glob("*.png"))) == 12
    report = json.loads((tmp_path / "rca-eval" / "eval.json").read_text())
    assert report["cams"]["num_images"] == report["pseudo_masks"]["num_images"] == 12
    assert 0 <= report["cams"]["miou"] <= 1 and 0 <= report["cams"]["best_threshold"] <= 0.6
    assert report["pseudo_masks"]["ignored_fraction"] == 0.0  # the CRF rule ignores nothing
    for script in ("rca-cams", "rca-pseudo", "rca-eval"):  # each stage's log lives in its own run folder
        assert (tmp_path / script / ".hydra" / "config.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "rca-cams",
        "rca-eval",
        "rca-pseudo",
        "train",
    ]

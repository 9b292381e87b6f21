"""Pseudo-mask rules on hand-made maps, the pooled resumable writer, and ``rca-pseudo``."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rca_lightning.data import voc_palette
from rca_lightning.imaging.image_arrays import read_rgb_file
from rca_lightning.imaging.palette_png import mask_file_is_complete, read_mask_png
from rca_lightning.pseudo.crf import DenseCRF
from rca_lightning.pseudo.ir_labels import IRLabelRefiner
from rca_lightning.pseudo.pseudo_mask_writer import PseudoMaskJob, mask_path, write_pseudo_masks
from rca_lightning.pseudo.pseudo_masks import (
    background_and_class_scores,
    channels_to_labels,
    saliency_pseudo_mask,
)
from rca_lightning.pseudo.refiners import CRFRefiner, SaliencyRefiner
from rca_lightning.pseudo.seed_sources import SeedSource
from rca_lightning.tasks.pseudo import pseudo
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from tests.references import reference_saliency_mask
from tests.stage_helpers import compose_config, make_dataset_with_cams


def test_background_score_power_and_threshold():
    cams = np.array([[[0.5, 0.1]], [[0.2, 0.0]]], np.float32)  # (2, 1, 2)
    scores = background_and_class_scores(cams, background_power=4)
    np.testing.assert_allclose(scores[0], [[0.5**4, 0.9**4]], rtol=1e-6)
    np.testing.assert_array_equal(scores[1:], cams)
    np.testing.assert_allclose(background_and_class_scores(cams, background_threshold=0.3)[0], [[0.3, 0.3]])
    assert (
        background_and_class_scores(np.zeros((0, 2, 3)))[0].tolist() == [[1.0] * 3] * 2
    )  # no tag: background


def test_channels_map_to_class_values():
    assert channels_to_labels(np.array([[0, 1, 2]]), np.array([1, 4])).tolist() == [[0, 2, 5]]


def test_threshold_rule_without_crf_labels_foreground_where_the_top_score_exceeds_the_threshold():
    rng = np.random.default_rng(0)
    cams = rng.random((2, 9, 11)).astype(np.float32)
    refiner = CRFRefiner(crf=None, background_threshold=0.7)
    mask = refiner(np.zeros((9, 11, 3), np.uint8), cams, np.array([0, 2]), "an_image")
    for i in range(9):
        for j in range(11):
            top = max(cams[0, i, j], cams[1, i, j])
            expected = 0 if top <= 0.7 else (1 if cams[0, i, j] >= cams[1, i, j] else 3)
            assert mask[i, j] == expected


def test_crf_rule_on_a_two_region_image():
    image = np.zeros((24, 24, 3), np.uint8)
    image[:, 12:] = (200, 200, 40)  # an object on the right half, on a black background
    cams = np.full((1, 24, 24), 0.1, np.float32)  # background score 0.9^4 = 0.66 on the left
    cams[0, :, 12:] = 0.9
    cams[0, 5:9, 14:18] = 0.2  # a hole inside the object: background 0.8^4 = 0.41 wins without a CRF
    cams[0, 15:19, 3:7] = 0.35  # a false patch on the background: 0.35 beats 0.65^4 = 0.18
    expected = np.zeros((24, 24), np.uint8)
    expected[:, 12:] = 5
    without_crf = CRFRefiner(crf=None, background_power=4)(image, cams, np.array([4]), "an_image")
    assert (without_crf != expected).sum() == 32
    mask = CRFRefiner(crf=DenseCRF(), background_power=4)(image, cams, np.array([4]), "an_image")
    np.testing.assert_array_equal(mask, expected)


def hand_made_saliency_case():
    saliency = np.array([[0, 0, 255, 255], [0, 100, 255, 255], [0, 0, 10, 255], [0, 0, 0, 0]], np.uint8)
    class_scores = np.array(
        [[[0.0, 0.0, 0.95, 0.2], [0.5, 0.3, 0.95, 0.95], [0.0, 0.85, 0.95, 0.95], [0.0, 0.0, 0.0, 0.0]]],
        np.float32,
    )
    return class_scores, np.array([2]), saliency


def test_saliency_rule_on_hand_made_maps():
    class_scores, classes, saliency = hand_made_saliency_case()
    # (1,1) background but salient (100 >= 32); (2,1) background but attended (0.85 > 0.8);
    # (2,2) background 0.96 and class 0.95 both above 0.9: conflict.
    expected = [[0, 0, 3, 3], [0, 255, 3, 3], [0, 255, 255, 3], [0, 0, 0, 0]]
    assert saliency_pseudo_mask(class_scores, classes, saliency).tolist() == expected
    # 5 of 16 pixels are foreground: under a 50% minimum the whole image is ignored.
    assert (saliency_pseudo_mask(class_scores, classes, saliency, min_foreground=0.5) == 255).all()


def test_saliency_rule_matches_the_pixel_by_pixel_reference():
    rng = np.random.default_rng(3)
    class_scores = rng.random((2, 12, 13)).astype(np.float32)
    saliency = rng.integers(0, 256, (12, 13)).astype(np.uint8)
    saliency[:6] = rng.integers(0, 40, (6, 13))  # some background pixels not salient
    for settings in ({}, {"conflict": 0.7, "attention": 0.95, "background_saliency": 20}):
        fast = saliency_pseudo_mask(class_scores, np.array([0, 3]), saliency, **settings)
        assert fast.tolist() == reference_saliency_mask(class_scores, np.array([0, 3]), saliency, **settings)
        assert {0, 255} < set(np.unique(fast).tolist())


@pytest.fixture
def dataset_with_cams(tmp_path):
    cams_dir = tmp_path / "cams"
    cams_dir.mkdir()
    return make_dataset_with_cams(tmp_path / "voc", cams_dir), cams_dir


@pytest.mark.slow
def test_pool_writer_is_deterministic_and_resumes(dataset_with_cams, tmp_path):
    dataset, cams_dir = dataset_with_cams
    items = [(i, str(dataset.image_path(i))) for i in dataset.image_ids]
    inline, pooled = tmp_path / "inline", tmp_path / "pooled"
    write_pseudo_masks(items, PseudoMaskJob(cams_dir, inline), num_workers=0, progress=False)
    counts = write_pseudo_masks(items, PseudoMaskJob(cams_dir, pooled), num_workers=2, progress=False)
    assert counts == {"total": 12, "written": 12, "skipped": 0}
    for image_id in dataset.image_ids:
        with Image.open(mask_path(pooled, image_id)) as png:
            assert png.mode == "P"
            assert np.array(png.getpalette()[: 3 * 256]).reshape(256, 3).tolist() == voc_palette().tolist()
        np.testing.assert_array_equal(
            read_mask_png(mask_path(pooled, image_id)), read_mask_png(mask_path(inline, image_id))
        )
    # The blurred ground-truth "CAMs" give masks close to the ground truth.
    first = dataset.image_ids[0]
    truth = np.array(Image.open(dataset.mask_path(first)))
    valid = truth != 255
    assert (read_mask_png(mask_path(pooled, first))[valid] == truth[valid]).mean() > 0.9

    # Interrupted: one mask missing, one truncated; the others are not rewritten.
    ids = dataset.image_ids
    mask_path(pooled, ids[0]).unlink()
    broken = mask_path(pooled, ids[1])
    broken.write_bytes(broken.read_bytes()[:60])
    assert not mask_file_is_complete(broken)
    mtimes = {i: mask_path(pooled, i).stat().st_mtime_ns for i in ids[2:]}
    counts = write_pseudo_masks(items, PseudoMaskJob(cams_dir, pooled), num_workers=2, progress=False)
    assert counts == {"total": 12, "written": 2, "skipped": 10}
    assert {i: mask_path(pooled, i).stat().st_mtime_ns for i in ids[2:]} == mtimes
    assert mask_file_is_complete(broken)


class RecordingRefiner:
    """A refiner of one's own: labels every pixel with the first tagged class, and notes what it was given."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, image, seeds, classes, image_id):
        self.calls.append((image.shape, seeds.shape, tuple(classes), image_id))
        return np.full(image.shape[:2], classes[0] + 1 if len(classes) else 0, np.uint8)


def test_the_writer_runs_the_refiner_it_is_given(dataset_with_cams, tmp_path):
    dataset, cams_dir = dataset_with_cams
    items = [(i, str(dataset.image_path(i))) for i in dataset.image_ids[:3]]
    refiner = RecordingRefiner()
    write_pseudo_masks(
        items, PseudoMaskJob(cams_dir, tmp_path / "own", refiner), num_workers=0, progress=False
    )
    source = SeedSource("cams", cams_dir)
    for (image_id, image_path), call in zip(items, refiner.calls, strict=True):
        image = read_rgb_file(image_path)
        classes, seeds = source.seeds(image_id, image.shape[:2])
        assert call == (image.shape, seeds.shape, tuple(classes), image_id)
        assert (read_mask_png(mask_path(tmp_path / "own", image_id)) == classes[0] + 1).all()
        # The default refiner is the tested CRF rule itself.
        default = PseudoMaskJob(cams_dir, tmp_path / "default").pseudo_mask(image_id, image_path)
        np.testing.assert_array_equal(default, CRFRefiner(DenseCRF())(image, seeds, classes, image_id))
        assert PseudoMaskJob(cams_dir, tmp_path).refiner == CRFRefiner()


def test_the_saliency_refiner_names_a_missing_folder_or_map(dataset_with_cams, tmp_path):
    dataset, cams_dir = dataset_with_cams
    with pytest.raises(MissingInput, match=r"^refine\.saliency_dir=.*nowhere not found"):
        SaliencyRefiner(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    job = PseudoMaskJob(cams_dir, tmp_path / "out", SaliencyRefiner(tmp_path / "empty"))
    first = dataset.image_ids[0]
    with pytest.raises(MissingInput, match=rf"saliency map .*{first}\.png not found"):
        job.pseudo_mask(first, dataset.image_path(first))


def test_missing_cam_files_are_named(dataset_with_cams, tmp_path):
    dataset, cams_dir = dataset_with_cams
    (cams_dir / f"{dataset.image_ids[3]}.npz").unlink()
    items = [(i, str(dataset.image_path(i))) for i in dataset.image_ids]
    with pytest.raises(MissingInput, match=f"1 of 12 CAM files.*{dataset.image_ids[3]}"):
        write_pseudo_masks(items, PseudoMaskJob(cams_dir, tmp_path / "out"), num_workers=0, progress=False)


@pytest.mark.slow
def test_rca_pseudo_with_saliency(dataset_with_cams, tmp_path):
    dataset, cams_dir = dataset_with_cams
    saliency_dir = tmp_path / "saliency"
    saliency_dir.mkdir()
    for image_id in dataset.image_ids:  # saliency = the ground-truth objects
        truth = np.array(Image.open(dataset.mask_path(image_id)))
        Image.fromarray(np.where((truth > 0) & (truth < 255), 255, 0).astype(np.uint8)).save(
            saliency_dir / f"{image_id}.png"
        )
    output_dir = tmp_path / "run"
    cfg = compose_config(
        "pseudo",
        output_dir,
        [
            f"cams_dir={cams_dir}",
            "refine=saliency",
            f"refine.saliency_dir={saliency_dir}",
            "num_workers=2",
            "progress=false",
        ],
    )
    metrics, _ = pseudo(cfg)
    assert metrics["written"] == 12
    summary = json.loads((output_dir / "pseudo.json").read_text())
    assert summary["refine"]["conflict"] == 0.9 and summary["refine"]["crf"]["bilateral_srgb"] == 13.0
    masks = [read_mask_png(mask_path(output_dir / "pseudo_masks", i)) for i in dataset.image_ids]
    assert all(set(np.unique(m).tolist()) <= {0, 1, 2, 3, 255} for m in masks)
    assert any((m == 255).any() for m in masks)
    # A second run finds everything done.
    assert pseudo(cfg)[0]["written"] == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: CRFRefiner(background_power=float("nan")),
            "background_power: expected a finite number >= 0",
        ),
        (
            lambda d: CRFRefiner(background_threshold=1.5),
            "background_threshold: expected a finite number in [0, 1]",
        ),
        (lambda d: SaliencyRefiner(d, conflict=float("inf")), "conflict: expected a finite number in [0, 1]"),
        (
            lambda d: SaliencyRefiner(d, background=300),
            "background: expected an integer in [0, 255], got 300",
        ),
        (
            lambda d: SaliencyRefiner(d, min_foreground=-0.1),
            "min_foreground: expected a finite number in [0, 1]",
        ),
        (
            lambda d: IRLabelRefiner(label_confidence=2.0),
            "label_confidence: expected a finite number in [0, 1]",
        ),
    ],
)
def test_refiner_settings_out_of_range_are_named(tmp_path, make, message):
    with pytest.raises(InvalidSetting) as caught:
        make(tmp_path)
    assert str(caught.value).startswith(message)


def test_a_negative_worker_count_is_named_before_any_mask_is_written(dataset_with_cams, tmp_path):
    _, cams_dir = dataset_with_cams
    cfg = compose_config(
        "pseudo", tmp_path / "run", [f"cams_dir={cams_dir}", "num_workers=-2", "progress=false"]
    )
    with pytest.raises(InvalidSetting, match=r"^num_workers: expected an integer in \[0, 256\], got -2$"):
        pseudo(cfg)
    assert not list((tmp_path / "run").rglob("*.png"))


# Run in a fresh interpreter: this process's OpenMP team is used (a parallel torch op), then pseudo masks are
# written over a pool whose workers read CAM files stored at a stride (a parallel bilinear resize each).
POOL_AFTER_OPENMP = """
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rca_lightning.pseudo import PseudoMaskJob, save_cam_file, write_pseudo_masks

folder = Path(sys.argv[1])
torch.set_num_threads(2)
torch.nn.functional.interpolate(torch.rand(1, 8, 256, 256), scale_factor=2.0, mode="bilinear")
items = []
for index in range(4):
    image = np.random.default_rng(index).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f"{index}.png")
    cams = np.random.default_rng(index).random((3, 256, 256)).astype(np.float32)
    save_cam_file(folder / "cams" / f"{index}.npz", np.arange(3), cams, stride=4)
    items.append((str(index), str(folder / f"{index}.png")))
job = PseudoMaskJob(folder / "cams", folder / "masks")
print(write_pseudo_masks(items, job, num_workers=2, progress=False))
"""


@pytest.mark.slow
def test_pool_workers_do_not_hang_after_this_process_used_openmp(tmp_path):
    """GNU OpenMP is not fork-safe: a worker forked after training or CAM inference ran in the parent hung in
    its first parallel torch op (found by the scale rehearsal's full pipeline run: rca-pseudo at 0 of 240)."""
    (tmp_path / "cams").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", POOL_AFTER_OPENMP, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "{'total': 4, 'written': 4, 'skipped': 0}"

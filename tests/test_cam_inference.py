"""CAM inference (multi-scale + flip through Trainer.predict), the CAM file format, and resuming."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rca_lightning.callbacks import AttentionAccumulationCallback
from rca_lightning.data import VOCSegmentationDataset
from rca_lightning.pseudo.cam_inference import tagged_class_scores
from rca_lightning.pseudo.cam_writer import cam_file_is_complete, cam_path, load_cam_file, save_cam_file
from rca_lightning.tasks.cams import cams
from rca_lightning.utils.errors import InvalidData, InvalidSetting
from tests.references import reference_multiscale_cams
from tests.stage_helpers import compose_config, load_trained_model, make_training_run

SCALES = [0.5, 1.0, 1.5, 2.0]


@pytest.fixture(scope="module")
def training_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("train_run")
    make_training_run(run_dir, tmp_path_factory.mktemp("cache"))
    return run_dir


def cams_config(training_run: Path, output_dir: Path, *overrides: str):
    return compose_config("cams", output_dir, [f"train_dir={training_run}", "trainer=cpu", *overrides])


def split_dataset(training_run: Path, split: str = "train") -> VOCSegmentationDataset:
    dataset = json.loads((training_run / "metrics.json").read_text())["dataset"]
    return VOCSegmentationDataset(dataset["root"], split, dataset["class_names"])


def test_tagged_class_scores_keep_only_tagged_classes_scaled_to_one():
    summed = torch.rand(4, 5, 6) * 3
    classes, scores = tagged_class_scores(summed, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert classes.tolist() == [1, 3]
    for k, c in enumerate(classes.tolist()):
        torch.testing.assert_close(scores[k], summed[c] / (summed[c].max() + 1e-5))
    classes, scores = tagged_class_scores(summed, torch.zeros(4))
    assert classes.numel() == 0 and scores.shape == (0, 5, 6)


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_cam_file_round_trip_and_corrupt_files(tmp_path, dtype):
    cams_in = np.random.default_rng(0).random((2, 7, 9)).astype(np.float32)
    path = cam_path(tmp_path, "2007_000032")
    save_cam_file(path, np.array([0, 5]), cams_in, dtype=dtype)
    classes, cams_out = load_cam_file(path)
    assert classes.tolist() == [0, 5] and cams_out.shape == (2, 7, 9) and cams_out.dtype == np.float32
    np.testing.assert_allclose(cams_out, cams_in, atol=1e-3 if dtype == "float16" else 0.5 / 255 + 1e-6)
    with np.load(path) as raw:
        assert raw["cams"].dtype == np.dtype(dtype) and set(raw.files) == {"classes", "cams"}
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file is left behind"
    assert cam_file_is_complete(path)

    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated half-way
    assert not cam_file_is_complete(path)
    with pytest.raises(InvalidData, match="2007_000032.npz: not a readable CAM file"):
        load_cam_file(path)
    # An image with no tag keeps its size with zero maps.
    save_cam_file(path, np.zeros(0, np.int64), np.zeros((0, 7, 9)))
    assert load_cam_file(path)[1].shape == (0, 7, 9)


def test_strided_cam_file_is_read_at_the_image_size_and_a_damaged_size_is_named(tmp_path):
    """A map constant over each 4 x 4 cell is stored exactly (area means) and read back at the image's size;
    a ``size`` that is not an image's (negative, huge, not integers, smaller than the grid) is named."""
    cells = np.random.default_rng(0).random((1, 3, 5)).astype(np.float32)
    cams_in = cells.repeat(4, axis=1).repeat(4, axis=2)[:, :10, :18]  # (1, 10, 18): partial last cells
    path = cam_path(tmp_path, "a")
    save_cam_file(path, np.array([3]), cams_in, stride=4)
    with np.load(path) as raw:
        assert raw["size"].tolist() == [10, 18] and raw["cams"].shape == (1, 3, 5)
        np.testing.assert_allclose(raw["cams"], cells, atol=1e-3)
    classes, cams_out = load_cam_file(path)
    assert classes.tolist() == [3] and cams_out.shape == (1, 10, 18)
    interior = cams_out[0, 2:6, 2:6]  # cell (0..1, 0..1) centres: bilinear between their values
    assert cells[0, :2, :2].min() - 1e-3 <= interior.min() and interior.max() <= cells[0, :2, :2].max() + 1e-3
    for size in ([-1, 18], [10**9, 18], [2, 2], [10.0, 18.0], [10, 18, 1]):
        np.savez(path, classes=np.array([3]), cams=np.zeros((1, 3, 5), np.float16), size=np.array(size))
        assert not cam_file_is_complete(path)
        with pytest.raises(InvalidData, match="a.npz: "):
            load_cam_file(path)


def test_cam_file_write_is_atomic(tmp_path, monkeypatch):
    path = cam_path(tmp_path, "a")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        save_cam_file(path, np.array([1]), np.ones((1, 4, 4)))
    assert not path.exists(), "an interrupted write never leaves a file under the final name"


# Stride-4 storage against full resolution, per image of the tiny run (64 px: object edges weigh most here):
# measured at most 0.0076 mean absolute difference and at least 97.1 % of pixels in the same class.
MEAN_ERROR_BOUND, MASK_AGREEMENT_BOUND = 0.015, 0.95


@pytest.mark.slow
def test_rca_cams_writes_each_image_and_resumes(training_run, tmp_path):
    output_dir = tmp_path / "cams_run"
    metrics, _ = cams(cams_config(training_run, output_dir, "cam_stride=1"))
    dataset = split_dataset(training_run)
    cams_dir = output_dir / "cams"
    assert metrics["written"] == len(dataset) == 12 and metrics["skipped"] == 0
    assert json.loads((output_dir / "cams.json").read_text())["written"] == 12

    model = load_trained_model(training_run)
    for index in (0, 5):
        item = dataset[index]
        classes, stored = load_cam_file(cam_path(cams_dir, item["image_id"]))
        assert classes.tolist() == item["labels"].nonzero().flatten().tolist()
        assert stored.shape[1:] == item["image"].shape[1:] and stored.min() >= 0 and stored.max() <= 1
        with torch.no_grad():
            summed = reference_multiscale_cams(lambda x: model(x).cams, item["image"], SCALES, True)
        _, expected = tagged_class_scores(summed, item["labels"])
        np.testing.assert_allclose(stored, expected.numpy(), atol=2e-3)

    # Interrupted run: two files never written, one truncated; the rest must not be recomputed.
    ids = dataset.image_ids
    before = {i: cam_path(cams_dir, i).read_bytes() for i in ids}
    for image_id in ids[:2]:
        cam_path(cams_dir, image_id).unlink()
    truncated = cam_path(cams_dir, ids[2])
    truncated.write_bytes(before[ids[2]][:100])
    mtimes = {i: cam_path(cams_dir, i).stat().st_mtime_ns for i in ids[3:]}

    metrics, _ = cams(cams_config(training_run, output_dir, "cam_stride=1"))
    assert metrics["written"] == 3 and metrics["skipped"] == 9
    assert {i: cam_path(cams_dir, i).stat().st_mtime_ns for i in ids[3:]} == mtimes
    for image_id in ids[:3]:
        assert cam_file_is_complete(cam_path(cams_dir, image_id))
        a, b = load_cam_file(cam_path(cams_dir, image_id)), np.load(io.BytesIO(before[image_id]))
        np.testing.assert_array_equal(a[1].astype(np.float16), b["cams"])

    # Nothing left to do: no image is run again.
    assert cams(cams_config(training_run, output_dir, "cam_stride=1"))[0]["written"] == 0

    # Resuming with other settings into the same folder is refused, naming the settings file.
    with pytest.raises(InvalidSetting, match=r"settings.json records other settings for \['scales'\]"):
        cams(cams_config(training_run, output_dir, "cam_stride=1", "scales=[1.0]"))


@pytest.mark.slow
def test_cams_stored_at_stride_4_keep_the_maps_at_a_sixteenth_of_the_bytes(training_run, tmp_path):
    """The default storage (cam_stride=4: the finest grid of an output-stride-8 network at scale 2) against
    the full-resolution files of the same run: loaded back at the image's size, the maps and the masks they
    give (argmax against a 0.25 background) agree, in about 1/16 of the bytes."""
    full_dir, strided_dir = tmp_path / "full", tmp_path / "strided"
    cams(cams_config(training_run, full_dir, "cam_stride=1"))
    metrics, _ = cams(cams_config(training_run, strided_dir))
    assert json.loads((strided_dir / "cams.json").read_text())["cam_stride"] == 4
    image_ids = split_dataset(training_run).image_ids
    full_bytes = sum(cam_path(full_dir / "cams", i).stat().st_size for i in image_ids)
    strided_bytes = sum(cam_path(strided_dir / "cams", i).stat().st_size for i in image_ids)
    assert strided_bytes < full_bytes / 5  # the .npz headers weigh at these 64 px images
    errors, agreement = [], []
    for image_id in image_ids:
        classes, full = load_cam_file(cam_path(full_dir / "cams", image_id))
        strided_classes, strided = load_cam_file(cam_path(strided_dir / "cams", image_id))
        assert strided_classes.tolist() == classes.tolist() and strided.shape == full.shape
        with np.load(cam_path(strided_dir / "cams", image_id)) as stored:
            height, width = full.shape[1:]
            assert stored["cams"].shape[1:] == (-(-height // 4), -(-width // 4))
        errors.append(np.abs(strided - full).mean())
        background = np.full((1, *full.shape[1:]), 0.25, np.float32)
        masks = [np.concatenate([background, maps]).argmax(0) for maps in (full, strided)]
        agreement.append((masks[0] == masks[1]).mean())
    assert max(errors) < MEAN_ERROR_BOUND and min(agreement) > MASK_AGREEMENT_BOUND, (errors, agreement)


def test_rca_cams_attention_seeds_follow_the_normalisation_their_store_records(training_run, tmp_path):
    """``seeds=attention`` from an accumulation recorded with ``min_max``: the files hold the release's seeds
    (each map resized to the image, then ``(a - min) / (max - min + 1e-8)``) and the settings record it."""
    dataset = split_dataset(training_run)
    maps = np.random.default_rng(0).integers(40, 256, (len(dataset), len(dataset.class_names), 8, 8))
    folder = tmp_path / "attention"
    accumulation = AttentionAccumulationCallback(folder, resolution=8, seed_normalisation="min_max")
    accumulation.create_storage(dataset.image_ids, dataset.class_names)
    every = torch.ones(maps.shape[:2], dtype=torch.bool)
    accumulation.write(torch.arange(len(dataset)), torch.from_numpy(maps.astype(np.uint8)), every, every)
    accumulation.flush()
    index = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**index, "complete": True}))  # what training's end records

    output_dir = tmp_path / "cams_run"
    cams(cams_config(training_run, output_dir, "cam_stride=1", "seeds=attention", f"attention_dir={folder}"))
    settings = json.loads((output_dir / "cams" / "settings.json").read_text())
    assert settings["seeds"] == "attention" and settings["seed_normalisation"] == "min_max"
    assert json.loads((output_dir / "cams.json").read_text())["seed_normalisation"] == "min_max"
    for row, image_id in enumerate(dataset.image_ids):
        classes, seeds = load_cam_file(cam_path(output_dir / "cams", image_id))
        assert classes.tolist() == np.flatnonzero(dataset.labels[row]).tolist()
        stored = torch.from_numpy(maps[row, classes]).double()[:, None]  # (K, 1, 8, 8)
        resized = F.interpolate(stored, size=seeds.shape[1:], mode="bilinear", align_corners=False)[:, 0]
        low, high = resized.amin(dim=(1, 2), keepdim=True), resized.amax(dim=(1, 2), keepdim=True)
        np.testing.assert_allclose(seeds, ((resized - low) / (high - low + 1e-8)).numpy(), atol=1e-3)
        # Every stored map's minimum is at least 40, which 255 -> 1 would keep: min-max brings it to 0.
        assert (seeds.min(axis=(1, 2)) < 1e-3).all()

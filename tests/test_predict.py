"""``rca-predict`` and ``Segmenter``: a trained run on a user's own images, and the same numbers as the
segmentation stage's evaluation on the val split."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rca_lightning.data import SyntheticVOCGenerator
from rca_lightning.imaging.palette_png import read_mask_png
from rca_lightning.inference.prediction import (
    RECORDS_FILE,
    check_max_pixels,
    check_output_folder,
    list_inputs,
    output_stems,
    pixel_batches,
)
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from tests.console_runs import ScriptResult, run_in_process
from tests.references import reference_confusion, reference_miou, reference_multiscale_cams
from tests.stage_helpers import make_training_run, train_segmentation_run

CLASSES = ["disc", "square", "triangle"]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict_data") / "VOC2012"
    SyntheticVOCGenerator(CLASSES, num_train=16, num_val=8, image_size=64, seed=3).generate(root)
    return root


@pytest.fixture(scope="module")
def seg_run(dataset_root, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("predict_seg") / "run"
    return run_dir, train_segmentation_run(dataset_root, CLASSES, run_dir, epochs=2, in_process=True)


def run_predict(*overrides: str, log_dir: Path) -> ScriptResult:
    """``rca-predict``, run in this process (``tests/console_runs.py``)."""
    return run_in_process("rca-predict", *overrides, f"hydra.run.dir={log_dir}")


def val_ids(root: Path) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()


@pytest.mark.slow
def test_prediction_on_val_reproduces_the_segmentation_stage_miou(seg_run, dataset_root, tmp_path):
    run_dir, summary = seg_run
    out = tmp_path / "masks"
    result = run_predict(
        f"run_dir={run_dir}",
        f"inputs={dataset_root / 'JPEGImages'}/val_*.jpg",
        f"output_dir={out}",
        log_dir=tmp_path / "log",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["tta_scales"] == [0.75, 1.0] and settings["tta_flip"] is True  # the run's own views
    predictions = [read_mask_png(out / f"{image_id}.png") for image_id in val_ids(dataset_root)]
    truths = [read_mask_png(dataset_root / "SegmentationClass" / f"{i}.png") for i in val_ids(dataset_root)]
    confusion = reference_confusion(
        [torch.from_numpy(p) for p in predictions],
        [torch.from_numpy(t) for t in truths],
        len(CLASSES) + 1,
        255,
    )
    miou = 100 * reference_miou(confusion)[0]
    assert abs(miou - summary["metrics"]["test/seg_mIoU"]) < 0.1, (miou, summary["metrics"]["test/seg_mIoU"])
    assert len((out / RECORDS_FILE).read_text().splitlines()) == len(predictions)


def write_user_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Images as users have them: odd sizes, greyscale, RGBA, palette, 16-bit, BMP, WebP; (H, W) each."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {}

    def rgb(height: int, width: int) -> np.ndarray:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)

    Image.fromarray(rgb(37, 53)).save(folder / "odd.jpg", quality=90)
    sizes["odd"] = (37, 53)
    Image.fromarray(rgb(375, 500)).save(folder / "large.png")
    sizes["large"] = (375, 500)
    Image.fromarray(rgb(40, 30)[:, :, 0]).save(folder / "grey.png")
    sizes["grey"] = (40, 30)
    rgba = np.concatenate([rgb(48, 64), np.full((48, 64, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(folder / "alpha.png")
    sizes["alpha"] = (48, 64)
    Image.fromarray(rgb(33, 45)).convert("P").save(folder / "palette.bmp")
    sizes["palette"] = (33, 45)
    Image.fromarray((rng.integers(0, 65535, (29, 31))).astype(np.uint16)).save(folder / "deep.png")
    sizes["deep"] = (29, 31)
    Image.fromarray(rgb(50, 70)).save(folder / "web.webp")
    sizes["web"] = (50, 70)
    whole = folder / "odd.jpg"
    (folder / "broken.jpg").write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 3])
    (folder / "notes.txt").write_text("not an image: a folder lists image files only")
    return sizes


@pytest.mark.slow
def test_user_images_any_size_and_mode_a_corrupt_one_counted_and_reruns_resume(seg_run, tmp_path):
    run_dir, _ = seg_run
    sizes = write_user_images(tmp_path / "photos")
    out = tmp_path / "masks"
    args = (f"run_dir={run_dir}", f"inputs={tmp_path / 'photos'}", f"output_dir={out}", "overlay=true")
    result = run_predict(*args, log_dir=tmp_path / "log1")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rca-predict: error: 1 of 8 inputs could not be read"), (
        lines
    )
    assert str(tmp_path / "photos" / "broken.jpg") in lines[0]
    for stem, size in sizes.items():
        mask = read_mask_png(out / f"{stem}.png")
        assert mask.shape == size and mask.max() <= len(CLASSES), stem
        assert Image.open(out / f"{stem}_overlay.jpg").size == (size[1], size[0])
    assert not (out / "broken.png").exists()
    records = [json.loads(line) for line in (out / RECORDS_FILE).read_text().splitlines()]
    assert sorted(record["mask"] for record in records) == sorted(f"{stem}.png" for stem in sizes)
    for record in records:
        assert (record["height"], record["width"]) == sizes[Path(record["mask"]).stem]
        assert abs(sum(record["classes"].values()) - 1) < 1e-4
        assert set(record["classes"]) <= {"background", *CLASSES}
    before = {stem: (out / f"{stem}.png").stat().st_mtime_ns for stem in sizes}

    (tmp_path / "photos" / "broken.jpg").unlink()
    result = run_predict(*args, log_dir=tmp_path / "log2")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "predict.json").read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (0, len(sizes), [])
    assert {stem: (out / f"{stem}.png").stat().st_mtime_ns for stem in sizes} == before  # not rewritten
    assert len((out / RECORDS_FILE).read_text().splitlines()) == len(sizes)

    changed = run_predict(*args, "tta_flip=false", log_dir=tmp_path / "log3")  # other settings, same folder
    assert changed.returncode == 2 and "records other settings for ['tta_flip']" in changed.stderr


@pytest.mark.slow
def test_segmenter_takes_a_path_a_pil_image_and_an_array(seg_run, dataset_root):
    run_dir, _ = seg_run
    segmenter = Segmenter.from_run(run_dir, device="cpu")
    path = dataset_root / "JPEGImages" / f"{val_ids(dataset_root)[0]}.jpg"
    from_path = segmenter.segment(path)
    from_pil = segmenter.segment(Image.open(path))
    image = np.asarray(Image.open(path).convert("RGB"))  # read-only, as arrays from PIL are
    from_array = segmenter.segment(image)
    assert from_path.shape == (64, 64) and from_path.dtype == np.uint8
    np.testing.assert_array_equal(from_path, from_pil)
    np.testing.assert_array_equal(from_path, from_array)
    # The evaluation path: the run's views averaged, argmax (no other choice in between).
    model = segmenter.model
    pixels = torch.tensor(image)[None].permute(0, 3, 1, 2).float() / 255
    images = (pixels - torch.tensor(model.hparams.image_mean).view(1, 3, 1, 1)) / torch.tensor(
        model.hparams.image_std
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.predict_scores(images)[0].argmax(0).numpy()
    np.testing.assert_array_equal(from_path, expected)
    with pytest.raises(InvalidSetting, match="image: expected a path, a PIL image or an HxWx3 uint8 array"):
        segmenter.segment(np.zeros((4, 4, 3), np.float32))


@pytest.mark.slow
def test_classifier_run_segments_from_its_cams(tmp_path):
    run_dir = tmp_path / "train"
    run_dir.mkdir()
    make_training_run(run_dir, tmp_path / "cache")
    with pytest.raises(InvalidSetting, match="cam_threshold=None: expected a background score"):
        Segmenter.from_run(run_dir, device="cpu")  # the run's metrics record no evaluated threshold
    with pytest.raises(InvalidSetting, match="source=seg: .* has no trained segmentation network"):
        Segmenter.from_run(run_dir, source="seg")
    segmenter = Segmenter.from_run(
        run_dir, cam_threshold=0.2, tta_scales=[1.0, 1.5], tta_flip=True, device="cpu"
    )
    model = segmenter.model
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (2, 40, 56, 3), dtype=torch.uint8)
    masks = segmenter.predict_batch(pixels)
    # Reference, from the rule: per image, the classes the classifier finds (logit > 0), each of their
    # summed maps over the views divided by its maximum, background 0.2 where no class is above it.
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    for index in range(2):
        image = ((pixels[index].float() / 255 - mean) / std).permute(2, 0, 1)
        with torch.no_grad():
            found = model.class_logits(model(image[None]))[0] > 0
            summed = reference_multiscale_cams(model.predict_cam_maps, image, [1.0, 1.5], True)
        expected = np.zeros((40, 56), np.uint8)
        best = np.full((40, 56), 0.2)
        for c in np.flatnonzero(found.numpy()):
            score = (summed[c] / (summed[c].max() + 1e-5)).numpy()
            expected[score > best] = c + 1
            best = np.maximum(best, score)
        agree = (masks[index].numpy() == expected).mean()
        assert agree > 0.999, agree  # ties aside, the same labels
    assert segmenter.settings()["cam_threshold_origin"] == "setting"


def test_inputs_are_a_file_a_folder_or_a_glob_and_names_must_not_collide(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("a/x.jpg", "a/y.PNG", "a/z.txt", "b/x.png"):
        (tmp_path / name).write_bytes(b"")
    assert list_inputs(str(tmp_path / "a")) == [tmp_path / "a" / "x.jpg", tmp_path / "a" / "y.PNG"]
    assert list_inputs(str(tmp_path / "a" / "z.txt")) == [tmp_path / "a" / "z.txt"]  # named: taken as is
    both = list_inputs(str(tmp_path / "*" / "x.*"))
    assert both == [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png"]
    with pytest.raises(InvalidSetting, match="would both write x.png"):
        output_stems(both)
    with pytest.raises(MissingInput, match="inputs=.*nowhere: not found"):
        list_inputs(str(tmp_path / "nowhere"))
    with pytest.raises(MissingInput, match="no image file"):
        list_inputs(str(tmp_path / "*.gif"))


# A classifier run segments from its CAMs with these settings (no evaluated threshold in an untrained run).
CAMS_ARGS = ("source=cams", "cam_threshold=0.2", "tta_scales=[1.0]", "tta_flip=false", "device=cpu")
MIB = 2**20


@pytest.fixture(scope="module")
def cams_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("predict_cams") / "train"
    run_dir.mkdir()
    make_training_run(run_dir, run_dir.parent / "cache")
    return run_dir


def write_photos(folder: Path) -> dict[str, str]:
    """Two small inputs, a PNG and a JPEG; their sha256 by name."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(folder / "b.jpg")
    return hashes(folder)


def hashes(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def run_predict_measured(*overrides: str, log_dir: Path) -> tuple[int, list[str], int]:
    """``rca-predict`` as a subprocess: its exit status, its stderr lines and its peak resident memory in
    bytes (``os.wait4``: that process's own, not another child's of this test session). The tests that
    compare peak memory run it so; the others run it in this process (:func:`run_predict`)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [str(Path(sys.executable).with_name("rca-predict")), *overrides, f"hydra.run.dir={log_dir}"]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        watchdog = threading.Timer(300, process.kill)
        watchdog.start()
        _, status, usage = os.wait4(process.pid, 0)
        watchdog.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        lines = [line for line in stderr.read().decode().splitlines() if line.strip()]
    return process.returncode, lines, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


@pytest.fixture(scope="module")
def predicted_into_the_inputs_folder(cams_run, tmp_path_factory) -> tuple:
    """``rca-predict output_dir=<the inputs folder>``: the folder, its hashes before, the outcome."""
    photos = tmp_path_factory.mktemp("into_inputs") / "photos"
    before = write_photos(photos)
    outcome = run_predict_measured(
        f"run_dir={cams_run}",
        f"inputs={photos}",
        f"output_dir={photos}",
        *CAMS_ARGS,
        log_dir=photos.parent / "log",
    )
    return photos, before, outcome


@pytest.mark.slow
def test_an_output_folder_holding_the_inputs_is_refused_and_no_input_changes(
    predicted_into_the_inputs_folder,
):
    photos, before, (status, lines, _) = predicted_into_the_inputs_folder
    assert status == 2, lines
    assert lines == [
        f"rca-predict: error: output_dir={photos}: writing a.png there would replace the input "
        f"{photos / 'a.png'}; expected an output folder that holds none of the inputs"
    ]
    assert hashes(photos) == before  # the same files, unchanged: nothing written, not even settings.json


@pytest.mark.slow
def test_a_huge_image_is_refused_from_its_header_the_others_are_segmented(
    cams_run, predicted_into_the_inputs_folder, tmp_path
):
    photos = tmp_path / "photos"
    write_photos(photos)
    huge = photos / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # 17 KB on disk, 412 MiB as RGB
    out = tmp_path / "masks"
    status, lines, peak = run_predict_measured(
        f"run_dir={cams_run}", f"inputs={photos}", f"output_dir={out}", *CAMS_ARGS, log_dir=tmp_path / "log"
    )
    assert status == 2, lines
    assert lines == [
        f"rca-predict: error: 1 of 3 inputs could not be read (first: {huge}: 12000 x 12000 pixels "
        "(144.0 megapixels), more than max_pixels=50000000; expected a smaller image (or a larger "
        f"max_pixels)); the other masks are in {out}"
    ]
    assert read_mask_png(out / "a.png").shape == (40, 50) and read_mask_png(out / "b.png").shape == (30, 20)
    assert not (out / "huge.png").exists()
    _, _, baseline = predicted_into_the_inputs_folder[2]  # a process that loaded the same run, no image
    assert peak < baseline + 300 * MIB, (peak / MIB, baseline / MIB)  # never decoded (412 MiB and more)


def test_an_output_folder_inside_the_run_or_replacing_a_hard_linked_input_is_refused(tmp_path):
    run_dir, photos = tmp_path / "run", tmp_path / "photos"
    write_photos(photos)
    inputs = sorted(photos.iterdir())
    with pytest.raises(InvalidSetting, match=f"output_dir={run_dir / 'masks'} is inside run_dir={run_dir};"):
        check_output_folder(run_dir / "masks", run_dir, inputs, ["a.png"])
    elsewhere = tmp_path / "masks"
    elsewhere.mkdir()
    os.link(photos / "b.jpg", elsewhere / "b_overlay.jpg")  # the same file under the overlay's name
    with pytest.raises(
        InvalidSetting, match=f"writing b_overlay.jpg there would replace the input {inputs[1]}"
    ):
        check_output_folder(elsewhere, run_dir, inputs, ["a.png", "b.png", "b_overlay.jpg"])
    check_output_folder(elsewhere, run_dir, inputs, ["a.png", "b.png"])  # no overlays: nothing replaced


def test_images_are_batched_within_a_pixel_budget_a_large_one_alone():
    counts = {0: 10, 1: 10, 2: 10, 3: 100, 4: 10, 5: 10}
    assert pixel_batches(counts, batch_size=2, batch_pixels=50) == [[0, 1], [2], [3], [4, 5]]
    assert pixel_batches(counts, batch_size=8, batch_pixels=50) == [[0, 1, 2], [3], [4, 5]]
    assert pixel_batches({}, batch_size=8, batch_pixels=50) == []


@pytest.mark.parametrize("value", [None, 0, -1, True, 1.5, "many"])
def test_max_pixels_must_be_a_positive_integer(value):
    with pytest.raises(InvalidSetting, match=f"max_pixels={value}: expected a positive number of pixels"):
        check_max_pixels(value)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("batch_size=0", "batch_size: expected an integer in [1, 1024], got 0"),
        ("num_workers=-1", "num_workers: expected an integer in [0, 256], got -1"),
    ],
)
@pytest.mark.slow
def test_settings_that_size_the_work_are_range_checked_before_anything_is_written(
    cams_run, tmp_path, setting, message
):
    photos, out = tmp_path / "photos", tmp_path / "masks"
    write_photos(photos)
    result = run_predict(
        f"run_dir={cams_run}", f"inputs={photos}", f"output_dir={out}", setting, log_dir=tmp_path / "log"
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert (result.returncode, lines) == (2, [f"rca-predict: error: {message}"])
    assert not out.exists()

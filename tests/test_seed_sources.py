"""Seed sources (CAM files, accumulated attention, their max) against references written from the
specification, the checks run before any work, and rca-eval / rca-pseudo with attention seeds."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from rca_lightning.callbacks.attention_accumulation import AttentionAccumulationCallback
from rca_lightning.imaging.palette_png import read_mask_png
from rca_lightning.pseudo.cam_evaluation import evaluate_cams
from rca_lightning.pseudo.cam_prediction_writer import CAMWriter
from rca_lightning.pseudo.cam_writer import cam_path, load_cam_file, save_cam_file
from rca_lightning.pseudo.pseudo_mask_writer import PseudoMaskJob, mask_path, write_pseudo_masks
from rca_lightning.pseudo.seed_sources import SeedSource, attention_maps, combine_seeds
from rca_lightning.tasks.evaluate import evaluate
from rca_lightning.tasks.pseudo import pseudo
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from tests.references import reference_cam_sweep
from tests.stage_helpers import compose_config, make_dataset_with_cams

CLASS_NAMES = ["disc", "square", "triangle"]


def make_accumulation(
    directory,
    image_ids,
    class_names,
    maps: np.ndarray,
    complete: bool = True,
    seed_normalisation="divide_255",
):
    """An accumulation folder written by the callback's own storage functions; maps (N, C, S, S) uint8."""
    callback = AttentionAccumulationCallback(
        directory, resolution=maps.shape[-1], seed_normalisation=seed_normalisation
    )
    callback.create_storage(image_ids, class_names)
    everything = torch.ones(maps.shape[:2], dtype=torch.bool)
    callback.write(torch.arange(len(image_ids)), torch.from_numpy(maps), everything, everything)
    callback.flush()
    if complete:  # what on_train_end records
        index = json.loads((directory / "index.json").read_text())
        (directory / "index.json").write_text(json.dumps({**index, "complete": True}))
    return directory


def rewrite_index(folder, index: dict) -> None:
    """Replace an accumulation's index.json, its modification time moved on (readers cache by it, and two
    writes within a clock tick share one)."""
    path = folder / "index.json"
    modified = path.stat().st_mtime_ns
    path.write_text(json.dumps(index))
    os.utime(path, ns=(modified + 10**9, modified + 10**9))


def bilinear_reference(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (S, S) grid, from the half-pixel definition: output pixel (i, j) samples the grid at
    ((i + 0.5) S / H - 0.5, (j + 0.5) S / W - 0.5), clamped to the grid, weighting its 4 neighbours."""
    side = grid.shape[0]
    out = np.zeros(size)
    for i in range(size[0]):
        y = min(max((i + 0.5) * side / size[0] - 0.5, 0.0), side - 1)
        y0, wy = int(y), y - int(y)
        y1 = min(y0 + 1, side - 1)
        for j in range(size[1]):
            x = min(max((j + 0.5) * side / size[1] - 0.5, 0.0), side - 1)
            x0, wx = int(x), x - int(x)
            x1 = min(x0 + 1, side - 1)
            top = (1 - wx) * grid[y0, x0] + wx * grid[y0, x1]
            bottom = (1 - wx) * grid[y1, x0] + wx * grid[y1, x1]
            out[i, j] = (1 - wy) * top + wy * bottom
    return out


def test_attention_maps_are_bilinear_and_scaled_to_one(tmp_path):
    maps = np.zeros((2, 3, 3, 3), np.uint8)
    maps[0, 0, :, 2] = 255  # class 0 of image "a": left 0, right 255
    maps[0, 2] = np.arange(9).reshape(3, 3) * 30
    maps[1, 1] = 7
    folder = make_accumulation(tmp_path / "attention", ["a", "b"], CLASS_NAMES, maps)
    # Hand-computed: 3 columns to 6 sample at -0.25, 0.25, 0.75, 1.25, 1.75, 2.25 (clamped to 0..2).
    out = attention_maps(folder, "a", np.array([0]), (2, 6))
    np.testing.assert_allclose(out, [[[0, 0, 0, 0.25, 0.75, 1]] * 2], atol=1e-7)
    out = attention_maps(folder, "a", np.array([2, 0]), (5, 7))  # K=2 in the given order
    assert out.shape == (2, 5, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], bilinear_reference(maps[0, 2] / 255.0, (5, 7)), atol=1e-6)
    np.testing.assert_allclose(out[1], bilinear_reference(maps[0, 0] / 255.0, (5, 7)), atol=1e-6)
    np.testing.assert_allclose(attention_maps(folder, "b", np.array([1]), (4, 4)), 7 / 255, atol=1e-7)
    assert attention_maps(folder, "b", np.zeros(0, np.int64), (4, 5)).shape == (0, 4, 5)
    with pytest.raises(InvalidData, match="no image 'c'"):
        attention_maps(folder, "c", np.array([0]), (4, 4))


@pytest.fixture
def tiny_seeds(tmp_path):
    """Image "a" (2 x 6) with CAMs of classes 0 and 2, and an accumulation of images "a" and "b"."""
    cams_dir = tmp_path / "cams"
    cams = np.stack([np.full((2, 6), 0.5), np.full((2, 6), 0.25)])  # exact in float16
    save_cam_file(cam_path(cams_dir, "a"), np.array([0, 2]), cams)
    maps = np.zeros((2, 3, 3, 3), np.uint8)
    maps[0, 0, :, 2] = 255  # resized to 2 x 6: rows [0, 0, 0, 0.25, 0.75, 1]
    maps[0, 1] = 255
    folder = make_accumulation(tmp_path / "attention", ["a", "b"], CLASS_NAMES, maps)
    return cams_dir, folder


def test_each_kind_gives_its_seeds(tiny_seeds):
    cams_dir, folder = tiny_seeds
    ramp = np.array([[0, 0, 0, 0.25, 0.75, 1]] * 2)
    classes, seeds = SeedSource("cams", cams_dir).seeds("a", (2, 6))
    assert classes.tolist() == [0, 2] and seeds.dtype == np.float32
    np.testing.assert_array_equal(seeds, [np.full((2, 6), 0.5), np.full((2, 6), 0.25)])
    # Attention: the dataset's tags; CAM files are not needed.
    classes, seeds = SeedSource("attention", attention_dir=folder).seeds("a", (2, 6), np.array([0, 1]))
    assert classes.tolist() == [0, 1]
    np.testing.assert_allclose(seeds, [ramp, np.ones((2, 6))], atol=1e-7)
    with pytest.raises(ValueError, match="no tags"):
        SeedSource("attention", attention_dir=folder).seeds("a", (2, 6))
    # Max: the CAM file's classes; class 0 max(0.5, ramp), class 2 has no attention (0).
    classes, seeds = SeedSource("max", cams_dir, folder).seeds("a", (2, 6))
    assert classes.tolist() == [0, 2]
    np.testing.assert_allclose(seeds[0], [[0.5, 0.5, 0.5, 0.5, 0.75, 1]] * 2, atol=1e-7)
    np.testing.assert_array_equal(seeds[1], np.full((2, 6), 0.25))
    with pytest.raises(InvalidData, match=r"CAMs of size \(2, 6\), expected the image's \(3, 6\)"):
        SeedSource("max", cams_dir, folder).seeds("a", (3, 6))
    cams, attention = np.full((1, 2, 2), 0.5), np.array([[[0.25, 0.75], [0.5, 1.0]]])
    assert combine_seeds("cams", cams, None).tolist() == cams.tolist()
    assert combine_seeds("attention", None, attention).tolist() == attention.tolist()
    assert combine_seeds("max", cams, attention).tolist() == [[[0.5, 0.75], [0.5, 1.0]]]


def test_bad_settings_and_missing_seeds_are_named(tiny_seeds, tmp_path):
    cams_dir, folder = tiny_seeds
    with pytest.raises(InvalidSetting, match=r"seeds='crf'.*\['cams', 'attention', 'max'\]"):
        SeedSource("crf", cams_dir)
    with pytest.raises(InvalidSetting, match="seeds=attention needs attention_dir"):
        SeedSource("attention", cams_dir)
    with pytest.raises(InvalidSetting, match="seeds=max needs cams_dir"):
        SeedSource("max", attention_dir=folder)
    with pytest.raises(InvalidSetting, match="seeds='sum'"):
        combine_seeds("sum", None, None)
    source = SeedSource("attention", attention_dir=folder)
    source.validate(["a", "b"], CLASS_NAMES)
    with pytest.raises(InvalidData, match=f"{folder}: 2 of 3 images are not in the accumulation, first: 'c'"):
        source.validate(["a", "c", "d"], CLASS_NAMES)
    with pytest.raises(InvalidData, match=f"{folder}: the accumulation's class names"):
        source.validate(["a"], ["disc", "square", "star"])
    with pytest.raises(MissingInput, match=f"cams_dir={tmp_path / 'none'} not found"):
        SeedSource("cams", tmp_path / "none").validate(["a"])
    with pytest.raises(MissingInput, match="1 of 2 CAM files are missing.*b.npz"):
        SeedSource("max", cams_dir, folder).validate(["a", "b"], CLASS_NAMES)
    incomplete = make_accumulation(
        tmp_path / "half", ["a"], CLASS_NAMES, np.zeros((1, 3, 2, 2), np.uint8), False
    )
    with pytest.raises(InvalidData, match=f"{incomplete}.*complete is false"):
        SeedSource("attention", attention_dir=incomplete).validate(["a"], CLASS_NAMES)
    with pytest.raises(
        MissingInput, match=f"attention_dir={tmp_path / 'nothing'} not found: expected the folder"
    ):
        SeedSource("attention", attention_dir=tmp_path / "nothing").validate(["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        MissingInput, match=f"attention_dir={tmp_path / 'empty'} holds no index.json: expected"
    ):
        SeedSource("attention", attention_dir=tmp_path / "empty").validate(["a"])


def data_overrides(dataset) -> list[str]:
    """The composed ``data`` config of an existing synthetic dataset (for stages without a cams_dir)."""
    return [
        f"data.root={dataset.root}",
        "data.generator=null",
        "data.image_size=64",
        "data.class_names=[disc,square,triangle]",
    ]


@pytest.fixture
def attention_run(tmp_path):
    """12 synthetic images with blurred-ground-truth CAM files, an accumulation at the image size (S = 64,
    so its maps are the seeds exactly) and a folder of uint8 CAM files that hold the same maps."""
    cams_dir = tmp_path / "cams"
    cams_dir.mkdir()
    dataset = make_dataset_with_cams(tmp_path / "voc", cams_dir)
    rng = np.random.default_rng(0)
    truths = np.stack([np.array(Image.open(dataset.mask_path(i))) for i in dataset.image_ids])  # (N, 64, 64)
    objects = truths[:, None] == np.arange(1, 4)[:, None, None]  # (N, C, 64, 64)
    maps = (objects * 150 + rng.integers(0, 106, objects.shape)).astype(np.uint8)
    folder = make_accumulation(tmp_path / "attention", dataset.image_ids, CLASS_NAMES, maps)
    same_maps = tmp_path / "same_maps"
    for row, (image_id, labels) in enumerate(zip(dataset.image_ids, dataset.labels, strict=True)):
        classes = np.flatnonzero(labels)
        save_cam_file(cam_path(same_maps, image_id), classes, maps[row, classes] / 255.0, dtype="uint8")
    return dataset, cams_dir, folder, same_maps


def test_rca_eval_attention_seeds_score_like_cam_files_holding_the_same_maps(attention_run, tmp_path):
    dataset, _, folder, same_maps = attention_run
    overrides = ["seeds=attention", f"attention_dir={folder}", "thresholds=[0.2,0.8,0.1]", "progress=false"]
    metrics, report = evaluate(
        compose_config("eval", tmp_path / "eval", [*overrides, *data_overrides(dataset)])
    )
    expected = evaluate_cams(
        same_maps,
        dataset.image_ids,
        [dataset.mask_path(i) for i in dataset.image_ids],
        CLASS_NAMES,
        torch.tensor([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
        progress=False,
    )
    assert report["cams"]["sweep"] == expected["sweep"] and len(expected["sweep"]) == 7
    assert metrics["cams/miou"] == expected["miou"] > 0.5
    assert report["cams"]["per_class_iou"] == expected["per_class_iou"]
    assert report["cams"]["seeds"] == "attention" and report["cams"]["attention_dir"] == str(folder.resolve())
    assert report["cams"]["cams_dir"] is None and report["cams"]["split"] == "train"
    assert report["cams"]["seed_normalisation"] == "divide_255"  # what the accumulation recorded
    assert json.loads((tmp_path / "eval" / "eval.json").read_text()) == report


def test_max_seed_sweep_matches_pixel_by_pixel_reference(attention_run, tmp_path):
    dataset, cams_dir, _, _ = attention_run
    ids = dataset.image_ids[:5]
    maps = np.random.default_rng(1).integers(0, 256, (5, 3, 16, 16)).astype(np.uint8)
    folder = make_accumulation(tmp_path / "coarse", ids, CLASS_NAMES, maps)
    thresholds = [0.23, 0.41, 0.67, 0.83]
    result = evaluate_cams(
        SeedSource("max", cams_dir, folder),
        ids,
        [dataset.mask_path(i) for i in ids],
        CLASS_NAMES,
        torch.tensor(thresholds),
        progress=False,
    )
    scores, targets = [], []
    for row, image_id in enumerate(ids):
        classes, cams = load_cam_file(cam_path(cams_dir, image_id))
        full = np.zeros((3, 64, 64))
        for k, c in enumerate(classes):
            full[c] = np.maximum(cams[k], bilinear_reference(maps[row, c] / 255.0, (64, 64)))
        scores.append(torch.from_numpy(full))
        targets.append(torch.from_numpy(np.array(Image.open(dataset.mask_path(image_id)))))
    mious, best, _ = reference_cam_sweep(scores, targets, thresholds)
    assert list(result["sweep"].values()) == pytest.approx(mious, abs=1e-9)
    assert result["best_threshold"] == pytest.approx(thresholds[best])


@pytest.mark.slow
def test_rca_pseudo_attention_seeds_need_no_cams_dir(attention_run, tmp_path):
    dataset, _, folder, same_maps = attention_run
    overrides = ["seeds=attention", f"attention_dir={folder}", "num_workers=2", "progress=false"]
    output_dir = tmp_path / "pseudo"
    metrics, _ = pseudo(compose_config("pseudo", output_dir, [*overrides, *data_overrides(dataset)]))
    assert metrics["written"] == 12
    settings = json.loads((output_dir / "pseudo_masks" / "settings.json").read_text())
    assert settings["seeds"] == "attention" and settings["attention_dir"] == str(folder.resolve())
    assert settings["cams_dir"] is None and settings["split"] == "train"
    assert settings["seed_normalisation"] == "divide_255"
    assert settings["dataset"]["class_names"] == CLASS_NAMES
    assert json.loads((output_dir / "pseudo.json").read_text())["seeds"] == "attention"
    # The same masks as from CAM files holding the same maps (same background rule and CRF).
    items = [(i, str(dataset.image_path(i))) for i in dataset.image_ids]
    write_pseudo_masks(
        items, PseudoMaskJob(same_maps, tmp_path / "from_files"), num_workers=0, progress=False
    )
    for image_id in dataset.image_ids:
        np.testing.assert_array_equal(
            read_mask_png(mask_path(output_dir / "pseudo_masks", image_id)),
            read_mask_png(mask_path(tmp_path / "from_files", image_id)),
        )


def test_stages_check_seeds_before_any_work(attention_run, tmp_path):
    dataset, cams_dir, folder, _ = attention_run
    partial = make_accumulation(
        tmp_path / "partial", dataset.image_ids[1:], CLASS_NAMES, np.zeros((11, 3, 4, 4), np.uint8)
    )
    for overrides in (
        ["seeds=attention", f"attention_dir={partial}", *data_overrides(dataset)],
        ["seeds=max", f"cams_dir={cams_dir}", f"attention_dir={partial}"],
    ):
        cfg = compose_config("pseudo", tmp_path / "run", [*overrides, "progress=false"])
        with pytest.raises(InvalidData, match=f"{partial}: 1 of 12 images.*first: '{dataset.image_ids[0]}'"):
            pseudo(cfg)
        assert not (tmp_path / "run").exists()
    with pytest.raises(InvalidSetting, match="seeds='mean': expected one of"):
        evaluate(compose_config("eval", tmp_path / "eval", ["seeds=mean", f"cams_dir={cams_dir}"]))
    # rca-cams wrote attention seeds already: combining them again is refused, reading them is not.
    settings = json.loads((cams_dir / "settings.json").read_text())
    (cams_dir / "settings.json").write_text(json.dumps({**settings, "seeds": "attention"}))
    cfg = compose_config(
        "eval", tmp_path / "eval", ["seeds=max", f"cams_dir={cams_dir}", f"attention_dir={folder}"]
    )
    with pytest.raises(InvalidSetting, match="already seeds=attention seeds; seeds=max"):
        evaluate(cfg)
    cfg = compose_config("eval", tmp_path / "eval", [f"cams_dir={cams_dir}", "progress=false"])
    report = evaluate(cfg)[1]["cams"]
    assert report["seeds"] == "cams" and report["seed_normalisation"] is None  # no accumulation read


@pytest.mark.parametrize("kind", ["attention", "max"])
def test_cam_writer_writes_the_seeds_of_its_kind(tmp_path, kind):
    maps = np.zeros((1, 3, 2, 2), np.uint8)
    maps[0, 1] = [[0, 255], [255, 0]]
    folder = make_accumulation(tmp_path / "attention", ["a"], CLASS_NAMES, maps)
    cams = np.full((1, 4, 4), 0.5, np.float32)  # class 1 only
    writer = CAMWriter(tmp_path / "cams", dtype="float16", seeds=kind, attention_dir=folder)
    writer.write_on_batch_end(
        None, None, [{"image_id": "a", "classes": np.array([1]), "cams": cams}], None, None, 0, 0
    )
    classes, written = load_cam_file(cam_path(tmp_path / "cams", "a"))
    expected = bilinear_reference(maps[0, 1] / 255.0, (4, 4))
    if kind == "max":
        expected = np.maximum(expected, 0.5)
    assert classes.tolist() == [1]
    np.testing.assert_allclose(written[0], expected, atol=1e-3)  # float16 storage
    with pytest.raises(InvalidSetting, match="seeds=max needs attention_dir"):
        CAMWriter(tmp_path / "cams", seeds="max")


# ----------------------------------------------------------------- the release's min-max normalised seeds
def release_seed(stored: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The release's seed of one image and class: its stored 0..255 map resized to the image (res.py), then
    ``(a - min) / (max - min + 1e-8)`` over that map's pixels (gen_labels.py)."""
    resized = bilinear_reference(stored.astype(np.float64), size)
    return (resized - resized.min()) / (resized.max() - resized.min() + 1e-8)


def test_a_store_recorded_min_max_gives_the_release_seeds_per_image_and_class(tmp_path):
    maps = np.zeros((2, 3, 3, 3), np.uint8)
    maps[0, 0] = [[100, 120, 140], [110, 200, 150], [105, 130, 160]]  # minimum above 0, interior peak
    maps[0, 2, :, 2] = 255
    maps[1, 0] = 7  # constant: no contrast to stretch
    folder = make_accumulation(
        tmp_path / "min_max", ["a", "b"], CLASS_NAMES, maps, seed_normalisation="min_max"
    )
    divided = make_accumulation(tmp_path / "divided", ["a", "b"], CLASS_NAMES, maps)
    size = (4, 6)  # no output pixel samples the stored centre exactly
    out = attention_maps(folder, "a", np.array([2, 0, 1]), size)
    assert out.shape == (3, 4, 6) and out.dtype == np.float32
    for row, label in enumerate([2, 0, 1]):
        np.testing.assert_allclose(out[row], release_seed(maps[0, label], size), atol=1e-6)
    # The min and max are the resized map's: its peak (a bilinear sample near the stored 200) becomes 1, which
    # normalising the stored 3 x 3 map first would not give.
    assert out[1].max() == pytest.approx(1.0, abs=1e-6) and out[1].min() == pytest.approx(0.0, abs=1e-6)
    assert (out[1] - (bilinear_reference(maps[0, 0], size) - 100) / 100).max() > 0.05
    # The same maps in a store recorded with divide_255 (255 -> 1) differ where a map's minimum is above 0.
    plain = attention_maps(divided, "a", np.array([2, 0]), size)
    np.testing.assert_allclose(plain[1], bilinear_reference(maps[0, 0] / 255.0, size), atol=1e-6)
    assert np.abs(plain[1] - out[1]).max() > 0.35  # its minimum, 100 / 255, becomes 0
    np.testing.assert_allclose(plain[0], out[0], atol=1e-6)  # 0..255 already: the two rules agree
    np.testing.assert_array_equal(out[2], 0)  # a class never written
    np.testing.assert_array_equal(attention_maps(folder, "b", np.array([0]), (4, 4)), 0)
    assert attention_maps(folder, "b", np.zeros(0, np.int64), (4, 5)).shape == (0, 4, 5)


def test_seed_sources_read_the_normalisation_their_store_records(tiny_seeds, tmp_path):
    cams_dir, divided = tiny_seeds
    maps = np.zeros((2, 3, 3, 3), np.uint8)
    maps[0, 0] = [[60, 60, 255]] * 3  # minimum above 0: min-max pulls it down to 0
    maps[0, 1] = 255
    folder = make_accumulation(
        tmp_path / "release", ["a", "b"], CLASS_NAMES, maps, seed_normalisation="min_max"
    )
    ramp = np.array([[0, 0, 0, 0.25, 0.75, 1]] * 2)
    source = SeedSource("attention", attention_dir=folder)
    assert source.seed_normalisation == "min_max"
    classes, seeds = source.seeds("a", (2, 6), np.array([0, 1]))
    np.testing.assert_allclose(seeds, [ramp, np.zeros((2, 6))], atol=1e-6)  # the constant map: 0
    classes, seeds = SeedSource("max", cams_dir, folder).seeds("a", (2, 6))
    np.testing.assert_allclose(seeds[0], np.maximum(0.5, ramp), atol=1e-6)
    assert SeedSource("max", cams_dir, divided).seed_normalisation == "divide_255"
    assert SeedSource("cams", cams_dir).seed_normalisation is None
    # An index written before the setting existed reads as divide_255.
    index = json.loads((folder / "index.json").read_text())
    del index["seed_normalisation"]
    rewrite_index(folder, index)
    assert source.seed_normalisation == "divide_255"
    classes, seeds = source.seeds("a", (2, 6), np.array([0, 1]))
    np.testing.assert_allclose(seeds[0], (60 + 195 * ramp) / 255, atol=1e-6)
    np.testing.assert_allclose(seeds[1], 1, atol=1e-6)
    # A value no reader knows is refused, naming the index file and the values expected.
    rewrite_index(folder, {**index, "seed_normalisation": "softmax"})
    with pytest.raises(InvalidData) as error:
        source.validate(["a"], CLASS_NAMES)
    assert str(error.value) == (
        f"{folder / 'index.json'}: seed_normalisation 'softmax', expected one of ['divide_255', 'min_max']"
    )
    with pytest.raises(InvalidData, match="seed_normalisation 'softmax'"):
        attention_maps(folder, "a", np.array([0]), (2, 6))

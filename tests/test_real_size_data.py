"""The real-size generated sets (VOC- and COCO-shaped) read by the real datamodules of the presets, and the
generator's promises: deterministic bytes, resumable and atomic writing, one-line user errors."""

import hashlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from pycocotools import mask as mask_utils

from rca_lightning.cli import generate_real_size
from rca_lightning.data import (
    COCO_CATEGORIES,
    COCO_CLASS_NAMES,
    VOC_CLASS_NAMES,
    COCOLikeGenerator,
    SyntheticVOCGenerator,
    VOCDataModule,
    VOCLikeGenerator,
    generate_coco_like,
    generate_voc_like,
)
from rca_lightning.data import synthetic_chunked_writer as chunked_writer
from rca_lightning.data.coco_masks import INDEX_FILE
from rca_lightning.data.synthetic_coco_like import COCO_IMAGE_SIZES
from rca_lightning.data.synthetic_named_styles import named_styles
from rca_lightning.data.synthetic_voc_like import VOC_IMAGE_SIZES
from rca_lightning.imaging.palette_png import read_mask_png
from rca_lightning.tasks.stage_settings import datamodule_for
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from rca_lightning.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR

NUM_TRAIN, NUM_VAL = 6, 4
# The built-in dataset's drawing (generator version 2): the README's results were measured on these pixels.
BUILT_IN_RENDER_SHA256 = "88539653a37d967f484baa35b4e8537ba6f450d030127c4a9f7b2872fab1f0f2"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def compose_data(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data.num_workers=0", "data.batch_size=2", *overrides])
    return instantiate(cfg.data)


@pytest.fixture(scope="module")
def voc_like(tmp_path_factory):
    return generate_voc_like(
        tmp_path_factory.mktemp("voc_like") / "VOC2012", NUM_TRAIN, NUM_VAL, seed=1, workers=2
    )


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_like") / "coco2014"
    return generate_coco_like(root, NUM_TRAIN, NUM_VAL, seed=1, workers=2, max_objects=6)


def test_built_in_dataset_draws_the_same_pixels():
    generator = SyntheticVOCGenerator(["disc", "square", "triangle", "ring", "star", "cross"], image_size=128)
    digest = hashlib.sha256()
    for index in range(4):
        rendered = generator.render(np.random.default_rng([0, 0, index]))
        for array in (rendered.image, rendered.class_mask, rendered.object_mask):
            digest.update(array.tobytes())
        digest.update(repr(rendered.objects).encode())
    assert digest.hexdigest() == BUILT_IN_RENDER_SHA256


def test_eighty_named_classes_have_distinct_styles():
    styles = list(named_styles(COCO_CLASS_NAMES).values())
    assert len({(style.shape, style.texture) for style in styles}) == 80
    assert len({round(style.hue) for style in styles}) == 80


def test_voc_like_is_read_by_the_eps_preset_datamodule(voc_like):
    datamodule = compose_data(
        "experiment=voc_rca_eps", f"data.root={voc_like.root}", f"data.saliency_dir={voc_like.saliency_dir}"
    )
    assert isinstance(datamodule, VOCDataModule) and datamodule.train_split == "train_aug"
    assert datamodule.num_classes == 20 and datamodule.validate == "full"
    datamodule.require_saliency()
    datamodule.prepare_data()  # layout check and full validation (XML labels against masks)
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) == NUM_TRAIN and len(datamodule.val_dataset) == NUM_VAL
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 3, 448, 448) and batch["labels"].shape == (2, 20)
    assert batch["saliency"].shape == (2, 448, 448) and float(batch["saliency"].max()) > 0.5


def test_a_stage_reading_recorded_train_aug_checks_that_split_not_the_data_default(voc_like):
    """rca-eval / rca-pseudo compose ``data=voc`` without the classifier's experiment (``train_split:
    train``); the VOC + SBD layout written here has no ``train`` list. Found by the VOC rehearsal
    (bench/scale_rehearsal.py): the stage failed before reading the split its CAMs record."""
    record = {"root": str(voc_like.root), "class_names": list(VOC_CLASS_NAMES)}
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=["data=voc", "data.num_workers=0"])
    with pytest.raises(MissingInput, match="train.txt is missing"):
        datamodule_for(cfg.data, record).prepare_data()
    datamodule = datamodule_for(cfg.data, record, "train_aug")
    datamodule.prepare_data()
    assert len(datamodule.make_dataset("train_aug", train=False)) == NUM_TRAIN


def test_voc_like_images_have_voc_sizes_and_tags_equal_mask_classes(voc_like):
    root = voc_like.root
    allowed = {(height, width) for height, width, _ in VOC_IMAGE_SIZES}
    sizes = set()
    for split, mask_dir, count in (
        ("train_aug", "SegmentationClassAug", NUM_TRAIN),
        ("val", "SegmentationClass", NUM_VAL),
    ):
        ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert len(ids) == count and all(re.fullmatch(r"20\d\d_\d{6}", image_id) for image_id in ids)
        for image_id in ids:
            with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as jpeg:
                assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
                width, height = jpeg.size
            sizes.add((height, width))
            mask = np.array(Image.open(root / mask_dir / f"{image_id}.png"))
            assert mask.shape == (height, width) and (mask == 255).any()  # VOC's border band
            present = {VOC_CLASS_NAMES[value - 1] for value in np.unique(mask) if 0 < value < 255}
            annotation = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
            tags = {obj.findtext("name") for obj in annotation.findall("object")}
            assert tags == present and tags
            assert (int(annotation.findtext("size/width")), int(annotation.findtext("size/height"))) == (
                width,
                height,
            )
    assert sizes <= allowed and len(sizes) >= 2
    maps = sorted(voc_like.saliency_dir.glob("*.png"))
    assert [p.stem for p in maps] == sorted(
        (root / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    )


def test_coco_like_is_read_by_the_eps_preset_datamodule(coco_like):
    datamodule = compose_data(
        "experiment=coco_rca_eps",
        f"data.root={coco_like.root}",
        f"data.saliency_dir={coco_like.saliency_dir}",
        "data.mask_workers=0",
    )
    assert datamodule.num_classes == 80 and datamodule.validate == "full"
    datamodule.require_saliency()
    datamodule.prepare_data()  # mask cache from the instances JSON, then full validation
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) == NUM_TRAIN and len(datamodule.val_dataset) == NUM_VAL
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 3, 321, 321) and batch["labels"].shape == (2, 80)
    assert batch["saliency"].shape == (2, 321, 321)


def test_coco_like_mask_cache_equals_the_drawn_masks(coco_like):
    compose_data("data=coco", f"data.root={coco_like.root}", "data.mask_workers=0").prepare_data()
    generator = COCOLikeGenerator(NUM_TRAIN, NUM_VAL, seed=1, max_objects=6)
    for split, count in (("train2014", NUM_TRAIN), ("val2014", NUM_VAL)):
        cache = coco_like.root / "SegmentationClassCOCO" / split
        index = json.loads((cache / INDEX_FILE).read_text())
        for position in range(count):
            stem = Path(generator.file_name(split, position)).stem
            drawn = generator.semantic_mask(split, position)
            cached = read_mask_png(cache / f"{stem}.png")
            assert np.array_equal(cached, drawn)
            entry = index["images"][position]
            assert entry["file_name"] == f"{stem}.jpg"
            assert entry["classes"] == sorted(int(value) for value in np.unique(drawn) if value)


def test_coco_like_json_has_coco_ids_file_names_and_sizes(coco_like):
    allowed = {(height, width) for height, width, _ in COCO_IMAGE_SIZES}
    image_ids, annotation_ids = [], []
    for split in ("train2014", "val2014"):
        content = json.loads((coco_like.root / "annotations" / f"instances_{split}.json").read_text())
        assert [(c["id"], c["name"]) for c in content["categories"]] == list(COCO_CATEGORIES)
        for image in content["images"]:
            assert image["file_name"] == f"COCO_{split}_{image['id']:012d}.jpg"
            with Image.open(coco_like.root / split / image["file_name"]) as jpeg:
                assert jpeg.size == (image["width"], image["height"])
            assert (image["height"], image["width"]) in allowed
            image_ids.append(image["id"])
        for annotation in content["annotations"]:
            assert annotation["category_id"] in dict(COCO_CATEGORIES) and annotation["iscrowd"] == 0
            rle = annotation["segmentation"]
            assert annotation["area"] == float(mask_utils.area(rle)) > 0
            x, y, width, height = annotation["bbox"]
            assert x >= 0 and y >= 0 and x + width <= rle["size"][1] and y + height <= rle["size"][0]
            annotation_ids.append(annotation["id"])
    assert len(set(image_ids)) == len(image_ids) == NUM_TRAIN + NUM_VAL
    assert sorted(annotation_ids) == list(range(1, len(annotation_ids) + 1))
    stems = sorted(p.stem for p in coco_like.saliency_dir.glob("*.png"))
    assert len(stems) == NUM_TRAIN and all(stem.startswith("COCO_train2014_") for stem in stems)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    one = generate_voc_like(tmp_path / "one", 3, 2, seed=5, workers=1)
    two = generate_voc_like(tmp_path / "two", 3, 2, seed=5, workers=2)
    other = generate_voc_like(tmp_path / "other", 3, 2, seed=6, workers=1)
    assert tree_bytes(one.root) == tree_bytes(two.root)
    assert (
        tree_bytes(one.root)["JPEGImages/2011_000000.jpg"]
        != tree_bytes(other.root)["JPEGImages/2011_000000.jpg"]
    )


def test_interrupted_generation_resumes_and_is_never_seen_half_written(tmp_path, monkeypatch):
    monkeypatch.setattr(chunked_writer, "CHUNK_SIZE", 2)
    written = []
    original = COCOLikeGenerator.write_chunk

    def write_then_fail_on_the_third(self, folder, chunk):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append((chunk.split, chunk.start))
        return original(self, folder, chunk)

    root = tmp_path / "coco"
    with monkeypatch.context() as patch:
        patch.setattr(COCOLikeGenerator, "write_chunk", write_then_fail_on_the_third)
        with pytest.raises(KeyboardInterrupt):
            generate_coco_like(root, 5, 2, seed=2, workers=1)
    assert not root.exists()  # nothing published, no marker
    resumed_chunks = []

    def count(self, folder, chunk):
        resumed_chunks.append((chunk.split, chunk.start))
        return original(self, folder, chunk)

    monkeypatch.setattr(COCOLikeGenerator, "write_chunk", count)
    generate_coco_like(root, 5, 2, seed=2, workers=1)
    assert resumed_chunks == [("train2014", 4), ("val2014", 0)]  # the first two chunks were kept
    monkeypatch.setattr(COCOLikeGenerator, "write_chunk", original)
    fresh = generate_coco_like(tmp_path / "fresh", 5, 2, seed=2, workers=1)
    assert tree_bytes(root) == tree_bytes(fresh.root)
    assert not list(tmp_path.glob(".*partial*"))


def test_complete_set_is_kept_and_other_settings_replace_it(tmp_path):
    root = generate_voc_like(tmp_path / "VOC2012", 2, 1, workers=1).root
    jpeg = root / "JPEGImages" / "2011_000000.jpg"
    stamp = jpeg.stat().st_mtime_ns
    generate_voc_like(root, 2, 1, workers=1)
    assert jpeg.stat().st_mtime_ns == stamp
    assert not VOCLikeGenerator(3, 1).is_complete(root)
    generate_voc_like(root, 3, 1, workers=1)
    assert (root / "ImageSets/Segmentation/train_aug.txt").read_text().split() == [
        "2011_000000",
        "2011_000001",
        "2011_000002",
    ]


def test_voc_like_as_data_generator_writes_on_prepare(tmp_path):
    root = tmp_path / "VOC2012"
    datamodule = VOCDataModule(
        root,
        VOC_CLASS_NAMES,
        train_split="train_aug",
        mask_dirs={"train_aug": "SegmentationClassAug"},
        generator=VOCLikeGenerator(2, 1),
    )
    datamodule.prepare_data()
    assert VOCLikeGenerator(2, 1).is_complete(root)


def test_foreign_folder_is_refused_and_left_alone(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidSetting, match=r"mine: exists and is not a generated dataset"):
        generate_coco_like(root, 1, 1, workers=1)
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(
    "counts, setting",
    [(dict(num_train=0, num_val=1), "num_train=0"), (dict(num_train=2, num_val=1.5), "num_val=1.5")],
)
def test_bad_counts_name_the_setting(counts, setting):
    with pytest.raises(InvalidSetting, match=rf"^{re.escape(setting)}: expected an integer >= 1$"):
        VOCLikeGenerator(**counts)


def run_command(*args: str) -> subprocess.CompletedProcess:
    """``python -m rca_lightning.cli.generate_real_size`` as a subprocess (a module, not an installed console
    script: :func:`tests.console_runs.run_in_process` does not run it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "rca_lightning.cli.generate_real_size", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_command_writes_a_set_and_reports_its_rate(tmp_path, capsys):
    """The command's ``main`` called in this process (what ``python -m`` runs; the real process is
    test_command_user_error_is_one_line_and_exit_2's)."""
    status = generate_real_size.main(
        ["voc", str(tmp_path / "VOC2012"), "--train", "2", "--val", "1", "--workers", "1"]
    )
    stdout, stderr = capsys.readouterr()
    assert status == 0, stderr
    assert re.search(
        r"3 images \(2 train_aug, 1 val\) in [\d.]+ s \([\d.]+ images/s\), [\d,]+ bytes per image",
        stdout,
    )
    assert VOCLikeGenerator(2, 1).is_complete(tmp_path / "VOC2012")


@pytest.mark.slow
def test_command_user_error_is_one_line_and_exit_2(tmp_path):
    """A real process: the one line is all the process writes to stderr, imports included."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "data.bin").write_bytes(b"x")
    result = run_command("coco", str(tmp_path / "taken"), "--train", "1", "--val", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert (
        result.stderr.startswith("generate_real_size: error: ") and "not a generated dataset" in result.stderr
    )
    assert (tmp_path / "taken" / "data.bin").read_bytes() == b"x"

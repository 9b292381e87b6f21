"""PASCAL VOC 2012 + SBD train_aug on a tiny dataset written in the real formats.

JPEG images, palette PNGs with 255 borders (SegmentationClass), plain single-channel PNGs
(SegmentationClassAug), VOC XML annotations, ImageSets/Segmentation lists.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from rca_lightning.cli.prepare_voc import main as prepare_voc
from rca_lightning.data import VOC_CLASS_NAMES, VOCDataModule, VOCSegmentationDataset, voc_palette
from rca_lightning.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR
from tests.stage_helpers import assert_report_is_consistent, run_tiny_pipeline

CLASS = {name: i + 1 for i, name in enumerate(VOC_CLASS_NAMES)}
TRAIN_IDS = ["2007_000032", "2007_000039"]
VAL_IDS = ["2007_000033", "2007_000042"]
SBD_ONLY_IDS = ["2008_000123", "2011_003276"]
TRAIN_AUG_IDS = TRAIN_IDS + SBD_ONLY_IDS
SIZES = {  # (H, W): every image its own size, like VOC
    "2007_000032": (40, 48),
    "2007_000039": (36, 44),
    "2007_000033": (44, 40),
    "2007_000042": (40, 40),
    "2008_000123": (32, 48),
    "2011_003276": (48, 36),
}
# Objects per image: (class, (y0, y1, x0, x1)); the XML lists them all, the mask shows all but "difficult".
OBJECTS = {
    "2007_000032": [("aeroplane", (4, 20, 6, 30)), ("person", (22, 38, 30, 44))],
    "2007_000039": [("tvmonitor", (5, 30, 5, 30))],
    "2007_000033": [("cat", (6, 30, 4, 34)), ("dog", (30, 42, 10, 30))],
    "2007_000042": [("sheep", (10, 30, 10, 30))],
    "2008_000123": [("car", (4, 28, 4, 40)), ("bicycle", (10, 20, 40, 46))],
    "2011_003276": [("person", (8, 40, 6, 30))],
}
DIFFICULT = {"2007_000042": "bottle"}  # in the XML (so in the labels), not in the mask


def semantic_mask(image_id: str, borders: bool) -> np.ndarray:
    """(H, W) uint8: 0 background, class values, 255 on a 1-pixel band around each object if borders."""
    mask = np.zeros(SIZES[image_id], np.uint8)
    for name, (y0, y1, x0, x1) in OBJECTS[image_id]:
        if borders:
            mask[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = 255
        mask[y0:y1, x0:x1] = CLASS[name]
    return mask


def write_xml(path: Path, image_id: str) -> None:
    height, width = SIZES[image_id]
    objects = [(name, box, 0) for name, box in OBJECTS[image_id]]
    if image_id in DIFFICULT:
        objects.append((DIFFICULT[image_id], (1, 5, 1, 5), 1))
    parts = []
    for name, (y0, y1, x0, x1), difficult in objects:
        person_part = (
            "<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></part>"
            if name == "person"
            else ""
        )
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>{person_part}</object>"
        )
    path.write_text(
        f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
        "<source><database>The VOC2007 Database</database></source>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<segmented>1</segmented>{''.join(parts)}</annotation>"
    )


def write_palette_png(path: Path, mask: np.ndarray) -> None:
    png = Image.fromarray(mask, mode="P")
    png.putpalette(voc_palette().reshape(-1).tolist())
    png.save(path)


def write_tiny_voc(root: Path) -> Path:
    """A VOC2012 folder with SBD's SegmentationClassAug and train_aug list."""
    for folder in (
        "JPEGImages",
        "Annotations",
        "SegmentationClass",
        "SegmentationClassAug",
        "ImageSets/Segmentation",
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, (height, width) in SIZES.items():
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        write_xml(root / "Annotations" / f"{image_id}.xml", image_id)
        if image_id not in SBD_ONLY_IDS:  # VOC's own masks: palette PNG with 255 borders
            write_palette_png(
                root / "SegmentationClass" / f"{image_id}.png", semantic_mask(image_id, borders=True)
            )
    for image_id in TRAIN_AUG_IDS:  # SBD-augmented masks: plain single-channel PNGs
        Image.fromarray(semantic_mask(image_id, borders=image_id in TRAIN_IDS), mode="L").save(
            root / "SegmentationClassAug" / f"{image_id}.png"
        )
    lists = root / "ImageSets" / "Segmentation"
    for split, ids in (("train", TRAIN_IDS), ("val", VAL_IDS), ("train_aug", TRAIN_AUG_IDS)):
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def expected_labels(image_id: str) -> np.ndarray:
    labels = np.zeros(len(VOC_CLASS_NAMES), np.float32)
    for name in [n for n, _ in OBJECTS[image_id]] + ([DIFFICULT[image_id]] if image_id in DIFFICULT else []):
        labels[CLASS[name] - 1] = 1.0
    return labels


@pytest.fixture
def voc_root(tmp_path) -> Path:
    return write_tiny_voc(tmp_path / "VOCdevkit" / "VOC2012")


def voc_datamodule(root: Path, *overrides: str) -> VOCDataModule:
    """``data=voc`` from the packaged config, pointed at ``root``."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=voc", f"data.root={root}", "data.num_workers=0", *overrides])
    return instantiate(cfg.data)


def test_voc_class_names_and_palette_are_the_standard_ones():
    assert (
        len(VOC_CLASS_NAMES) == 20
        and VOC_CLASS_NAMES[0] == "aeroplane"
        and VOC_CLASS_NAMES[-1] == "tvmonitor"
    )
    palette = voc_palette()
    assert palette[[0, 1, 2, 15, 20, 255]].tolist() == [
        [0, 0, 0],
        [128, 0, 0],
        [0, 128, 0],
        [192, 128, 128],
        [0, 64, 128],
        [224, 224, 192],
    ]


@pytest.mark.parametrize("split", ["train_aug", "train", "val"])
def test_every_split_reads_masks_pixel_for_pixel_and_labels_from_xml(voc_root, split):
    datamodule = voc_datamodule(voc_root, "data.train_split=train_aug")
    datamodule.prepare_data()
    mask_dir = datamodule.mask_dir(split)
    assert mask_dir == ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
    dataset = VOCSegmentationDataset(voc_root, split, VOC_CLASS_NAMES, mask_dir=mask_dir)
    ids = {"train_aug": TRAIN_AUG_IDS, "train": TRAIN_IDS, "val": VAL_IDS}[split]
    assert dataset.image_ids == ids
    for index, image_id in enumerate(ids):
        item = dataset[index]
        expected = semantic_mask(image_id, borders=image_id not in SBD_ONLY_IDS)
        np.testing.assert_array_equal(item["mask"].numpy(), expected)
        assert item["image"].shape == (3, *SIZES[image_id])
        # XML labels: the difficult bottle is labelled though absent from the mask; person parts are not
        np.testing.assert_array_equal(item["labels"].numpy(), expected_labels(image_id))


def test_train_aug_loader_uses_sbd_masks(voc_root):
    datamodule = voc_datamodule(
        voc_root, "data.train_split=train_aug", "data.image_size=32", "data.batch_size=2"
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.train_dataset.mask_dir == "SegmentationClassAug" and len(datamodule.train_dataset) == 4
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["labels"].shape == (2, 20)
    assert set(batch["mask"].unique().tolist()) <= {0, 255} | set(CLASS.values())


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda root: os.rename(root / "SegmentationClassAug", root / "Aug"),
            r"folder .*SegmentationClassAug ",
        ),
        (
            lambda root: (root / "ImageSets/Segmentation/train_aug.txt").unlink(),
            r"split list .*train_aug\.txt",
        ),
        (
            lambda root: (root / "JPEGImages/2011_003276.jpg").unlink(),
            r"1 of 4 images .*first: .*2011_003276\.jpg",
        ),
        (
            lambda root: (root / "SegmentationClass/2007_000042.png").unlink(),
            r"1 of 2 masks .*2007_000042\.png",
        ),
        (
            lambda root: (root / "ImageSets/Segmentation/train_aug.txt").write_text(
                "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
            ),
            r"expected one image id per line",
        ),
    ],
)
def test_prepare_data_says_precisely_what_is_missing(voc_root, damage, message):
    damage(voc_root)
    datamodule = voc_datamodule(voc_root, "data.train_split=train_aug")
    with pytest.raises(FileNotFoundError, match=message) as error:
        datamodule.prepare_data()
    assert "\n" not in str(error.value) and str(voc_root) in str(error.value)


def test_prepare_data_lists_every_problem_at_once(voc_root):
    os.rename(voc_root / "SegmentationClassAug", voc_root / "Aug")
    (voc_root / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"SegmentationClassAug .*; split list .*val\.txt"):
        voc_datamodule(voc_root, "data.train_split=train_aug").prepare_data()


def test_mask_of_another_size_names_the_file(voc_root):
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(
        voc_root / "SegmentationClassAug/2008_000123.png"
    )
    dataset = VOCSegmentationDataset(voc_root, "train_aug", VOC_CLASS_NAMES, mask_dir="SegmentationClassAug")
    with pytest.raises(
        ValueError, match=r"2008_000123\.png: mask size \(10, 10\) differs from image size \(32, 48\)"
    ):
        dataset[2]


@pytest.mark.parametrize("palette", [True, False])
def test_mask_values_outside_the_classes_name_the_file(voc_root, palette):
    mask = semantic_mask("2007_000032", borders=True)
    mask[0, 0] = 21
    if palette:
        path = voc_root / "SegmentationClass/2007_000032.png"
        write_palette_png(path, mask)
        dataset = VOCSegmentationDataset(voc_root, "train", VOC_CLASS_NAMES)
    else:
        path = voc_root / "SegmentationClassAug/2007_000032.png"
        Image.fromarray(mask, mode="L").save(path)
        dataset = VOCSegmentationDataset(
            voc_root, "train_aug", VOC_CLASS_NAMES, mask_dir="SegmentationClassAug"
        )
    with pytest.raises(ValueError, match=rf"{path.name}: mask value 21 outside 0\.\.20 and 255"):
        dataset[0]


def test_prepare_voc_writes_class_label_files(voc_root, capsys):
    assert prepare_voc([str(voc_root)]) == 0
    labels = np.load(voc_root / "cls_labels.npy", allow_pickle=True).item()
    assert sorted(labels) == sorted(SIZES)
    for image_id, vector in labels.items():
        assert vector.dtype == np.float32
        np.testing.assert_array_equal(vector, expected_labels(image_id))
    lines = (voc_root / "cls_labels.txt").read_text().splitlines()
    assert "2007_000032 0 14" in lines  # aeroplane, person (0-based)
    assert "2007_000042 4 16" in lines  # bottle (difficult, from the XML), sheep
    assert "wrote labels of 6 images" in capsys.readouterr().out


def test_prepare_voc_converts_a_deeplab_list_and_reports_what_is_missing(voc_root, tmp_path, capsys):
    deeplab_list = tmp_path / "train_aug_deeplab.txt"
    deeplab_list.write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in TRAIN_AUG_IDS)
    )
    (voc_root / "ImageSets/Segmentation/train_aug.txt").unlink()
    assert prepare_voc([str(voc_root), "--split-list", str(deeplab_list), "--output", str(tmp_path)]) == 0
    assert (voc_root / "ImageSets/Segmentation/train_aug.txt").read_text().split() == TRAIN_AUG_IDS
    assert (tmp_path / "cls_labels.npy").is_file()

    (voc_root / "SegmentationClassAug/2011_003276.png").unlink()
    capsys.readouterr()
    assert prepare_voc([str(voc_root)]) == 2
    error_lines = capsys.readouterr().err.splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith("rca-prepare-voc: error: VOC layout under")
    assert "1 of 4 masks listed in" in error_lines[0]
    assert prepare_voc([str(tmp_path / "nowhere")]) == 2
    assert (
        capsys.readouterr().err
        == f"rca-prepare-voc: error: root {tmp_path / 'nowhere'} not found: expected the VOC2012 folder\n"
    )
    assert prepare_voc([str(voc_root), "--split-list", str(tmp_path / "absent.txt")]) == 2
    assert capsys.readouterr().err.startswith(
        f"rca-prepare-voc: error: --split-list {tmp_path / 'absent.txt'} not found"
    )


@pytest.mark.slow
def test_rca_pipeline_runs_end_to_end_on_tiny_voc_train_aug(voc_root, tmp_path):
    run_dir = tmp_path / "run"
    report = run_tiny_pipeline("voc", voc_root, run_dir, "data.train_split=train_aug")
    assert_report_is_consistent(report)
    assert report["dataset"]["class_names"] == list(VOC_CLASS_NAMES)
    assert (report["cam_split"], report["seg_split"]) == ("train_aug", "val")
    # Pseudo masks for every train_aug image, which the segmentation stage trained on.
    train_aug = (voc_root / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    assert sorted(path.stem for path in (run_dir / "pseudo_masks" / "masks").glob("*.png")) == sorted(
        train_aug
    )
    seg_config = OmegaConf.load(run_dir / "segmentation" / ".hydra" / "config.yaml")
    assert seg_config.data.train_split == "train_aug"

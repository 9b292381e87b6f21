"""The VOC-layout reader (synthetic and real-VOC-style folders) and the image + mask transforms."""

import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from rca_lightning.data.synthetic import SyntheticVOCGenerator
from rca_lightning.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_train_transform,
)
from rca_lightning.data.voc_classes import VOC_CLASS_NAMES, voc_palette
from rca_lightning.data.voc_dataset import VOCSegmentationDataset
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput

CLASSES = ("disc", "square", "triangle", "ring", "star")
MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc_reader") / "VOC2012"
    SyntheticVOCGenerator(CLASSES, num_train=12, num_val=4, image_size=64, seed=1).generate(root)
    return root


@pytest.fixture
def synthetic_copy(synthetic_root, tmp_path) -> Path:
    """A private copy the test may damage."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "VOC2012"))


def write_palette_png(path: Path, mask: np.ndarray) -> None:
    png = Image.fromarray(mask.astype(np.uint8))
    png.putpalette(voc_palette().reshape(-1).tolist())
    png.save(path)


@pytest.fixture
def real_voc_root(tmp_path) -> Path:
    """Three images in the real VOC style: VOC names, person <part>s, a 'difficult' object, mixed sizes."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    objects = {
        "2007_000032": [("aeroplane", 0), ("person", 1)],
        "2007_000039": [("tvmonitor", 0)],
        "2007_000063": [("dog", 1), ("chair", 0)],
    }
    for index, (image_id, names) in enumerate(objects.items()):
        height, width = 50 + 10 * index, 70
        cv2.imwrite(
            str(root / "JPEGImages" / f"{image_id}.jpg"), rng.integers(0, 255, (height, width, 3), np.uint8)
        )
        mask = np.zeros((height, width), np.uint8)
        xml_objects = []
        for slot, (name, difficult) in enumerate(names):
            mask[10:30, 5 + 30 * slot : 25 + 30 * slot] = VOC_CLASS_NAMES.index(name) + 1
            mask[9, 5 + 30 * slot : 25 + 30 * slot] = 255
            parts = "<part><name>head</name></part>" if name == "person" else ""
            xml_objects.append(
                f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                f"<difficult>{difficult}</difficult><bndbox><xmin>{6 + 30 * slot}</xmin><ymin>11</ymin>"
                f"<xmax>{25 + 30 * slot}</xmax><ymax>30</ymax></bndbox>{parts}</object>"
            )
        write_palette_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"<segmented>1</segmented>{''.join(xml_objects)}</annotation>"
        )
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(objects) + "\n")
    return root


def mask_classes(root: Path, image_id: str) -> set[int]:
    mask = np.array(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
    return {int(v) - 1 for v in np.unique(mask) if 0 < v < 255}


# ------------------------------------------------------------------------------------------ reader
def test_items_have_contract_types_and_labels_match_masks(synthetic_root):
    dataset = VOCSegmentationDataset(synthetic_root, "train", CLASSES)
    assert len(dataset) == 12 and dataset.num_classes == 5
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert item["labels"].shape == (5,) and item["labels"].dtype == torch.float32
        assert item["mask"].shape == (64, 64) and item["mask"].dtype == torch.int64
        assert isinstance(item["image_id"], str)
        labelled = set(torch.nonzero(item["labels"]).flatten().tolist())
        assert labelled == mask_classes(synthetic_root, item["image_id"])
        assert labelled == {int(v) - 1 for v in torch.unique(item["mask"]) if 0 < v < 255}
    # the default transform only normalises: undo it and recover the JPEG pixels
    item = dataset[0]
    restored = item["image"].permute(1, 2, 0).numpy() * STD + MEAN
    original = cv2.cvtColor(cv2.imread(str(dataset.image_path(item["image_id"]))), cv2.COLOR_BGR2RGB) / 255.0
    np.testing.assert_allclose(restored, original, atol=1e-5)


def test_real_voc_layout_reads_like_synthetic(real_voc_root):
    dataset = VOCSegmentationDataset(real_voc_root, "val", VOC_CLASS_NAMES)
    assert dataset.image_ids == ["2007_000032", "2007_000039", "2007_000063"]
    for index, image_id in enumerate(dataset.image_ids):
        # <part><name>head</name> is not a class; difficult objects count as present
        assert set(np.nonzero(dataset.labels[index])[0].tolist()) == mask_classes(real_voc_root, image_id)
        item = dataset[index]
        assert item["image"].shape[1:] == item["mask"].shape == (50 + 10 * index, 70)
        assert set(torch.unique(item["mask"]).tolist()) <= {0, 255} | {c + 1 for c in range(20)}


def test_labels_fall_back_to_masks_without_xml(synthetic_copy):
    expected = VOCSegmentationDataset(synthetic_copy, "train", CLASSES).labels
    for xml in (synthetic_copy / "Annotations").glob("train_*.xml"):
        xml.unlink()
    dataset = VOCSegmentationDataset(synthetic_copy, "train", CLASSES)
    np.testing.assert_array_equal(dataset.labels, expected)
    assert expected.sum() > 0


def test_missing_mask_is_all_ignore_and_empty_image_has_zero_labels(synthetic_copy):
    image_id = "train_000000"
    (synthetic_copy / "SegmentationClass" / f"{image_id}.png").unlink()
    dataset = VOCSegmentationDataset(synthetic_copy, "train", CLASSES)
    item = dataset[dataset.image_ids.index(image_id)]
    assert torch.all(item["mask"] == 255) and item["labels"].sum() > 0

    (synthetic_copy / "Annotations" / f"{image_id}.xml").write_text(
        "<annotation><filename>x.jpg</filename></annotation>"
    )
    dataset = VOCSegmentationDataset(synthetic_copy, "train", CLASSES)
    labels = dataset[dataset.image_ids.index(image_id)]["labels"]
    assert torch.equal(labels, torch.zeros(5)) and torch.isfinite(labels).all()


def test_dataset_pickles(synthetic_root):
    dataset = VOCSegmentationDataset(synthetic_root, "val", CLASSES, transform=build_train_transform(48))
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.image_ids == dataset.image_ids and clone[0]["image"].shape == (3, 48, 48)


# ------------------------------------------------------------------------------------------ errors
def test_missing_root_names_the_root(tmp_path):
    with pytest.raises(MissingInput, match=f"data.root={tmp_path / 'nowhere'} not found"):
        VOCSegmentationDataset(tmp_path / "nowhere", "train", CLASSES)


def test_missing_split_names_the_split_file(synthetic_root):
    with pytest.raises(MissingInput, match=r"split file .*ImageSets/Segmentation/train_aug\.txt not found"):
        VOCSegmentationDataset(synthetic_root, "train_aug", CLASSES)


def test_absent_images_name_the_first_file_and_the_count(synthetic_copy):
    (synthetic_copy / "JPEGImages" / "train_000003.jpg").unlink()
    (synthetic_copy / "JPEGImages" / "train_000007.jpg").unlink()
    with pytest.raises(MissingInput, match=r"2 of 12 images listed in .*train\.txt .*train_000003\.jpg"):
        VOCSegmentationDataset(synthetic_copy, "train", CLASSES)


def test_corrupt_image_names_the_file_at_load(synthetic_copy):
    (synthetic_copy / "JPEGImages" / "train_000002.jpg").write_bytes(b"not a jpeg at all")
    dataset = VOCSegmentationDataset(synthetic_copy, "train", CLASSES)
    dataset[0]
    with pytest.raises(InvalidData, match=r"train_000002\.jpg: cannot decode image"):
        dataset[2]


def test_unknown_xml_class_names_file_class_and_known_names(synthetic_copy):
    xml = synthetic_copy / "Annotations" / "train_000005.xml"
    xml.write_text(xml.read_text().replace("<name>", "<name>zebra", 1))
    with pytest.raises(
        InvalidData, match=r"train_000005\.xml: unknown class 'zebra\w+'; known class_names: \["
    ):
        VOCSegmentationDataset(synthetic_copy, "train", CLASSES)


def test_bad_mask_values_and_no_labels_name_the_file(synthetic_copy):
    (synthetic_copy / "Annotations" / "train_000001.xml").unlink()
    write_palette_png(
        synthetic_copy / "SegmentationClass" / "train_000001.png", np.full((64, 64), 9, np.uint8)
    )
    with pytest.raises(InvalidData, match=r"train_000001\.png: mask value 9 outside 0\.\.5"):
        VOCSegmentationDataset(synthetic_copy, "train", CLASSES)
    (synthetic_copy / "SegmentationClass" / "train_000001.png").unlink()
    with pytest.raises(MissingInput, match=r"neither .*train_000001\.xml nor .*train_000001\.png"):
        VOCSegmentationDataset(synthetic_copy, "train", CLASSES)


# ------------------------------------------------------------------------------------------ transforms
def colour_coded_sample(size: tuple[int, int] = (48, 64)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image whose colour encodes the mask class: an off-centre block and a stripe on background."""
    height, width = size
    colours = np.array([[40, 40, 40], [230, 30, 30], [30, 200, 60]], np.uint8)
    mask = np.zeros(size, np.uint8)
    mask[8:30, 6:26] = 1  # left, so a flip moves it
    mask[:, width - 12 : width - 4] = 2
    return colours[mask], mask, colours


def denormalise(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * STD + MEAN) * 255.0


@pytest.mark.parametrize("crop", [True, False])
def test_train_transform_keeps_image_and_mask_aligned(crop):
    image, mask, colours = colour_coded_sample()
    transform = build_train_transform(40, scale_range=(0.6, 1.6), crop=crop, color_jitter=None)
    flipped_seen = False
    for seed in range(30):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        out_image, out_mask = denormalise(out["image"]), out["mask"].numpy()
        assert out["image"].shape == (3, 40, 40) and out_mask.shape == (40, 40)
        assert set(np.unique(out_mask).tolist()) <= {0, 1, 2, 255}
        for label in (0, 1, 2):
            # away from label edges (linear vs nearest interpolation), the colour matches the label
            region = (out_mask == label).astype(np.uint8)
            interior = cv2.erode(
                region, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
            )
            interior = interior.astype(bool)
            if interior.any():
                assert np.abs(out_image[interior] - colours[label]).max() < 3.0, (seed, label)
        block_columns = np.nonzero((out_mask == 1).any(axis=0))[0]
        stripe_columns = np.nonzero((out_mask == 2).any(axis=0))[0]
        if len(block_columns) and len(stripe_columns):
            flipped_seen |= block_columns.mean() > stripe_columns.mean()
    assert flipped_seen  # flips happen, and the mask flips with the image


def test_padding_is_ignore_in_mask_and_zero_after_normalisation():
    image, mask, _ = colour_coded_sample((32, 32))
    transform = build_train_transform(64, scale_range=(0.5, 0.5), hflip=False, color_jitter=None)
    out = transform(image=image, mask=mask)
    padded = out["mask"].numpy() == 255
    # the longest side becomes 64, then x0.5 -> a 32 x 32 image inside a 64 x 64 canvas
    assert padded.sum() == 64 * 64 - 32 * 32
    assert torch.all(out["image"][:, torch.from_numpy(padded)].abs() < 0.02)
    assert torch.all(out["image"][:, ~torch.from_numpy(padded)].abs() > 0.02)


def test_color_jitter_changes_image_only():
    image, mask, _ = colour_coded_sample()
    plain = build_train_transform(48, crop=False, hflip=False, color_jitter=None)
    jittered = build_train_transform(48, crop=False, hflip=False, color_jitter=(0.5, 0.5, 0.5, 0.2))
    jittered.set_random_seed(0)
    a, b = plain(image=image, mask=mask), jittered(image=image, mask=mask)
    assert torch.equal(a["mask"], b["mask"]) and not torch.allclose(a["image"], b["image"])


def test_eval_transform_resizes_with_nearest_mask():
    image, mask, _ = colour_coded_sample()
    out = build_eval_transform(40)(image=image, mask=mask)
    assert out["image"].shape == (3, 40, 40) and set(np.unique(out["mask"].numpy()).tolist()) <= {0, 1, 2}
    kept = build_eval_transform(None)(image=image, mask=mask)
    assert kept["image"].shape == (3, 48, 64) and np.array_equal(kept["mask"].numpy(), mask)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(image_size=0), "image_size=0"),
        (dict(image_size=32, scale_range=(1.2, 0.8)), r"scale_range=\(1\.2, 0\.8\)"),
        (dict(image_size=32, color_jitter=(0.3, 0.3)), r"color_jitter=\(0\.3, 0\.3\)"),
    ],
)
def test_bad_transform_settings_name_the_setting(kwargs, pattern):
    with pytest.raises(InvalidSetting, match=pattern):
        build_train_transform(**kwargs)

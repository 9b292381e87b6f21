"""Saliency maps in the data path: read only when required, moved with the image, checked in one line."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from rca_lightning.data import COCODataModule, VOCDataModule, VOCSegmentationDataset, voc_palette
from rca_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, follow_geometry
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from tests.test_coco import TinyCOCO

CLASSES = ("disc", "square")
# (height, width) of the train images: landscape, portrait and square, so resizes, pads and crops all happen.
TRAIN_SIZES = ((50, 70), (60, 40), (64, 64), (36, 52))
ITEM_KEYS = {"image", "labels", "mask", "image_id", "index", "crop_box", "flipped"}
MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)


def write_voc_folder(root: Path) -> list[str]:
    """Smooth random JPEGs with palette masks (labels from the masks, no 255 anywhere); returns train ids."""
    rng = np.random.default_rng(0)
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    ids = {"train": [f"train_{i}" for i in range(len(TRAIN_SIZES))], "val": ["val_0", "val_1"]}
    sizes = dict(zip(ids["train"] + ids["val"], TRAIN_SIZES + ((40, 56), (48, 48)), strict=True))
    for image_id, (height, width) in sizes.items():
        coarse = rng.integers(0, 256, (height // 6 + 2, width // 6 + 2, 3)).astype(np.uint8)
        image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
        mask = np.zeros((height, width), np.uint8)
        mask[5:20, 5:25] = 1
        mask[height - 15 : height - 3, width // 2 : width - 2] = 2
        png = Image.fromarray(mask, mode="P")
        png.putpalette(voc_palette().reshape(-1).tolist())
        png.save(root / "SegmentationClass" / f"{image_id}.png")
    for split, split_ids in ids.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(split_ids) + "\n")
    return ids["train"]


def write_red_channel_maps(root: Path, image_ids: list[str], folder: Path) -> Path:
    """Saliency maps equal to the red channel of each image as the loader decodes it (grey PNGs)."""
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in image_ids:
        bgr = cv2.imread(str(root / "JPEGImages" / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
        Image.fromarray(bgr[:, :, 2], mode="L").save(folder / f"{image_id}.png")
    return folder


@pytest.fixture(scope="module")
def voc_folder(tmp_path_factory) -> tuple[Path, Path]:
    """(root, saliency folder) of a tiny VOC-layout dataset whose maps are the images' red channel."""
    root = tmp_path_factory.mktemp("saliency") / "VOC2012"
    train_ids = write_voc_folder(root)
    return root, write_red_channel_maps(root, train_ids, root.parent / "saliency")


@pytest.fixture
def voc_copy(voc_folder, tmp_path) -> tuple[Path, Path]:
    """A private copy the test may damage."""
    root, saliency = voc_folder
    root_copy = Path(shutil.copytree(root, tmp_path / "VOC2012"))
    return root_copy, Path(shutil.copytree(saliency, tmp_path / "saliency"))


def datamodule(root: Path, saliency_dir: Path | None, **settings) -> VOCDataModule:
    defaults = dict(image_size=48, batch_size=4, scale_range=(0.5, 1.5), color_jitter=None)
    return VOCDataModule(root, CLASSES, saliency_dir=saliency_dir, **{**defaults, **settings})


def test_saliency_moves_with_the_image_through_scale_pad_crop_and_flip(voc_folder):
    root, saliency_dir = voc_folder
    module = datamodule(root, saliency_dir)
    module.require_saliency()
    module.prepare_data()
    module.setup("fit")
    padded_seen = flipped_seen = 0
    for seed in range(12):
        torch.manual_seed(seed)
        batch = next(iter(module.train_dataloader()))
        saliency = batch["saliency"]
        assert saliency.shape == (4, 48, 48) and saliency.dtype == torch.float32
        assert saliency.min() >= 0 and saliency.max() <= 1
        red = (batch["image"][:, 0] * STD[0] + MEAN[0]) * 255.0  # (B, 48, 48), colour untouched here
        padded = batch["mask"] == 255  # the masks hold no 255: only padding does
        # Pixel for pixel: the map went through the same resize, padding, crop and flip as the image.
        assert (red - 255.0 * saliency)[~padded].abs().max() < 1.5
        assert (saliency[padded] == 0).all()  # EPS pads saliency with zeros, not with the mask's 255
        padded_seen += int(padded.any())
        flipped_seen += int(batch["flipped"].any())
    assert padded_seen and flipped_seen


def test_colour_jitter_and_normalisation_leave_the_saliency_alone(voc_folder):
    root, saliency_dir = voc_folder
    plain = datamodule(root, saliency_dir, crop=False, hflip=False)
    jittered = datamodule(root, saliency_dir, crop=False, hflip=False, color_jitter=(0.5, 0.5, 0.5, 0.2))
    items = []
    for module in (plain, jittered):
        module.require_saliency()
        module.setup("fit")
        items.append(module.train_dataset[0])
    assert torch.equal(items[0]["saliency"], items[1]["saliency"])
    assert not torch.allclose(items[0]["image"], items[1]["image"])


def test_colour_maps_are_averaged_and_maps_of_another_size_resized(voc_copy):
    root, saliency_dir = voc_copy
    height, width = TRAIN_SIZES[0]
    colour = np.zeros((height // 2, width // 2, 3), np.uint8)
    colour[:, : width // 4] = (30, 90, 240)  # left half: mean 120
    colour[:, width // 4 :] = (255, 255, 255)  # right half: 1
    Image.fromarray(colour, mode="RGB").save(saliency_dir / "train_0.png")
    dataset = VOCSegmentationDataset(root, "train", CLASSES, saliency_dir=saliency_dir)  # no resize
    item = dataset[0]
    assert item["saliency"].shape == (height, width) == item["image"].shape[1:]
    saliency = item["saliency"].numpy()
    assert np.allclose(saliency[:, : width // 2 - 2], 120 / 255, atol=1e-5)
    assert np.allclose(saliency[:, width // 2 + 2 :], 1.0, atol=1e-5)
    middle = saliency[:, width // 2 - 2 : width // 2 + 2]
    assert ((middle >= 120 / 255 - 1e-5) & (middle <= 1 + 1e-6)).all()  # linear, no overshoot


def test_without_require_saliency_items_and_batches_are_as_before(voc_folder):
    root, saliency_dir = voc_folder
    module = datamodule(root, saliency_dir)
    module.setup("fit")
    assert set(module.train_dataset[0]) == ITEM_KEYS
    assert set(next(iter(module.train_dataloader()))) == ITEM_KEYS
    module.require_saliency()
    assert "saliency" in next(iter(module.train_dataloader()))  # the train set was rebuilt with maps
    assert set(next(iter(module.val_dataloader()))) == ITEM_KEYS  # only the train split reads maps


def test_require_saliency_without_a_folder_names_the_setting(voc_folder):
    module = datamodule(voc_folder[0], None)
    with pytest.raises(InvalidSetting) as caught:
        module.require_saliency()
    message = str(caught.value)
    assert message.startswith("data.saliency_dir:") and "got null" in message and "\n" not in message


def test_relative_saliency_dir_is_taken_from_the_working_directory(voc_folder, monkeypatch):
    root, saliency_dir = voc_folder
    monkeypatch.chdir(saliency_dir.parent)
    module = datamodule(root, Path(saliency_dir.name))
    assert module.saliency_dir == saliency_dir.absolute()


@pytest.mark.parametrize("validate", ["full", "off"])
def test_missing_maps_name_the_first_id_and_the_count(voc_copy, validate):
    root, saliency_dir = voc_copy
    (saliency_dir / "train_1.png").unlink()
    (saliency_dir / "train_3.png").unlink()
    module = datamodule(root, saliency_dir, validate=validate)
    module.require_saliency()
    with pytest.raises(MissingInput) as caught:
        module.prepare_data()
    message = str(caught.value)
    assert "\n" not in message and "data.saliency_dir" in message
    assert f"2 of {len(TRAIN_SIZES)} images" in message
    assert message.endswith(f"first: {saliency_dir / 'train_1.png'}")


def test_a_missing_folder_names_the_setting(voc_folder, tmp_path):
    module = datamodule(voc_folder[0], tmp_path / "absent")
    module.require_saliency()
    with pytest.raises(MissingInput, match=rf"^data.saliency_dir={tmp_path / 'absent'} not found: expected"):
        module.prepare_data()


def truncated_png(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def sixteen_bit_png(path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(path)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path: path.write_bytes(b"not a png"), "does not decode"),
        (truncated_png, "does not decode"),
        (sixteen_bit_png, "expected an 8-bit grey or RGB PNG"),
    ],
)
def test_unreadable_maps_name_the_first_id_and_the_count(voc_copy, damage, reason):
    root, saliency_dir = voc_copy
    damage(saliency_dir / "train_2.png")
    damage(saliency_dir / "train_3.png")
    module = datamodule(root, saliency_dir)
    module.require_saliency()
    with pytest.raises(InvalidData) as caught:
        module.prepare_data()
    message = str(caught.value)
    assert "\n" not in message and reason in message
    assert f"2 of {len(TRAIN_SIZES)} image ids fail validation, first train_2: saliency map" in message
    assert str(saliency_dir / "train_2.png") in message


def test_require_saliency_after_prepare_data_checks_the_maps_at_once(voc_copy):
    """A module asks for maps in its ``setup``, after the trainer ran ``prepare_data`` and built datasets."""
    root, saliency_dir = voc_copy
    truncated_png(saliency_dir / "train_0.png")
    module = datamodule(root, saliency_dir)
    module.prepare_data()  # no maps required yet: nothing to complain about
    module.setup("fit")
    with pytest.raises(InvalidData, match=r"1 of 4 image ids fail validation, first train_0: saliency map"):
        module.require_saliency()


def test_follow_geometry_rejects_a_map_of_another_size():
    applied = [("HorizontalFlip", {"shape": (10, 12, 3)})]
    with pytest.raises(ValueError, match="had input"):
        follow_geometry(applied, np.zeros((10, 13), np.float32), (10, 12))


def test_coco_train_items_carry_saliency(tmp_path):
    coco = TinyCOCO(tmp_path / "coco2014")
    saliency_dir = tmp_path / "coco_saliency"
    saliency_dir.mkdir()
    for image in sorted((coco.root / "train2014").glob("*.jpg")):
        Image.fromarray(np.full((8, 8), 204, np.uint8), mode="L").save(saliency_dir / f"{image.stem}.png")
    module = COCODataModule(
        coco.root, image_size=32, batch_size=2, mask_workers=0, saliency_dir=saliency_dir, hflip=False
    )
    module.require_saliency()
    module.prepare_data()
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["saliency"].shape == (2, 32, 32)
    inside = batch["mask"] != 255
    assert torch.allclose(batch["saliency"][inside], torch.tensor(0.8))

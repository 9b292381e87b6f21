"""Validation of a split before training: every fault stops ``prepare_data`` in one line naming the id.

Each damaged dataset is a copy of a tiny built-in one (6 train / 4 val images of 48 px) or the tiny COCO of
``test_coco``. The console scripts turn the ``InvalidData`` raised here into one line and exit status 2
(``test_data_validation_cli`` runs a few of them end to end).
"""

import os
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

import rca_lightning
from rca_lightning.data import (
    COCO_CATEGORY_TO_CLASS,
    COCODataModule,
    SyntheticVOCGenerator,
    VOCDataModule,
    build_coco_masks,
    split_validation,
    voc_palette,
)
from rca_lightning.data.coco_dataset import COCOSegmentationDataset
from rca_lightning.data.coco_masks import MASK_CACHE_FOLDER
from rca_lightning.data.file_checks import ImageFiles, image_id_problem
from rca_lightning.data.split_validation import CACHE_FOLDER, quick_sample, validate_split
from rca_lightning.utils.errors import InvalidData, InvalidSetting
from tests.test_coco import TinyCOCO

CLASSES = ("disc", "square", "triangle")
# prepare_data of a 10-image dataset: well under a second; the bound leaves room for a loaded machine.
SECONDS_TO_FAIL = 20.0


@pytest.fixture(scope="module")
def built_in_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("validation") / "VOC2012"
    SyntheticVOCGenerator(class_names=CLASSES, num_train=6, num_val=4, image_size=48, seed=0).generate(root)
    return root


@pytest.fixture
def root(built_in_root, tmp_path) -> Path:
    """A private copy the test may damage."""
    return Path(shutil.copytree(built_in_root, tmp_path / "VOC2012"))


def datamodule(root: Path, **settings) -> VOCDataModule:
    return VOCDataModule(root, CLASSES, image_size=48, **settings)


def prepare_fails(module: VOCDataModule) -> tuple[str, float]:
    """``prepare_data``'s one-line ``InvalidData`` message, and the seconds it took to fail."""
    started = time.perf_counter()
    with pytest.raises(InvalidData) as caught:
        module.prepare_data()
    seconds = time.perf_counter() - started
    message = str(caught.value)
    assert "\n" not in message
    assert seconds < SECONDS_TO_FAIL
    return message, seconds


def write_mask(path: Path, mask: np.ndarray) -> None:
    png = Image.fromarray(mask.astype(np.uint8), mode="P")
    png.putpalette(voc_palette().reshape(-1).tolist())
    png.save(path)


def read_mask(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def mask_classes(root: Path, image_id: str) -> list[str]:
    values = np.unique(read_mask(root / "SegmentationClass" / f"{image_id}.png"))
    return [CLASSES[value - 1] for value in values.tolist() if 0 < value <= len(CLASSES)]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------- VOC faults
def test_intact_built_in_dataset_passes_and_every_id_is_read(root):
    reports = datamodule(root).validate_splits()
    assert {split: (report.listed, report.checked) for split, report in reports.items()} == {
        "train": (6, 6),
        "val": (4, 4),
    }


def test_truncated_jpeg_names_the_id_and_file(root):
    image = root / "JPEGImages" / "train_000002.jpg"
    truncate(image)
    # The fault: OpenCV, which the loader uses, returns a grey-filled image without an error.
    assert cv2.imread(str(image)) is not None
    message, _ = prepare_fails(datamodule(root))
    assert message.startswith(
        f"{root / 'ImageSets/Segmentation/train.txt'}: 1 of 6 image ids fail validation"
    )
    assert f"first train_000002: image {image} does not decode completely (image file is truncated" in message


def test_truncated_jpeg_is_found_even_if_a_library_allows_truncated_images(root, monkeypatch):
    truncate(root / "JPEGImages" / "val_000001.jpg")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    message, _ = prepare_fails(datamodule(root))
    assert "first val_000001: image" in message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after the check


def test_nothing_in_the_project_lets_pil_accept_truncated_images():
    package = Path(rca_lightning.__file__).parent
    setting = re.compile(r"LOAD_TRUNCATED_IMAGES\s*=\s*True")
    assert [path for path in package.rglob("*.py") if setting.search(path.read_text())] == []


def test_mask_of_another_size_names_the_id_and_both_sizes(root):
    mask = root / "SegmentationClass" / "train_000001.png"
    write_mask(mask, read_mask(mask)[:40])
    message, _ = prepare_fails(datamodule(root))
    assert f"first train_000001: mask {mask} size (40, 48) differs from image size (48, 48)" in message


def test_mask_with_a_value_outside_the_classes_names_the_value(root):
    mask = root / "SegmentationClass" / "val_000003.png"
    values = read_mask(mask)
    values[0, 0] = 9
    write_mask(mask, values)
    message, _ = prepare_fails(datamodule(root))
    assert message.startswith(f"{root / 'ImageSets/Segmentation/val.txt'}: 1 of 4 image ids")
    assert f"first val_000003: mask {mask} holds value 9; expected 0..3 or 255" in message


def test_xml_without_object_but_mask_with_a_class_names_the_id(root):
    image_id = "train_000004"
    xml = root / "Annotations" / f"{image_id}.xml"
    xml.write_text(f"<annotation><filename>{image_id}.jpg</filename></annotation>")
    shown = mask_classes(root, image_id)
    assert shown  # the fault: the image would train with no label
    message, _ = prepare_fails(datamodule(root))
    assert f"first {image_id}: mask {root / 'SegmentationClass' / f'{image_id}.png'} shows {shown}" in message
    assert f"but {xml} has no <object>" in message


def test_xml_object_without_mask_pixels_names_the_id(root):
    image_id = "val_000000"
    mask = root / "SegmentationClass" / f"{image_id}.png"
    listed = mask_classes(root, image_id)
    write_mask(mask, np.zeros_like(read_mask(mask)))
    message, _ = prepare_fails(datamodule(root))
    xml = root / "Annotations" / f"{image_id}.xml"
    assert f"first {image_id}: {xml} lists <object> {listed} with no pixel in mask {mask}" in message


def test_difficult_objects_need_no_pixels(root):
    """VOC paints difficult objects void (255): an XML may list them with no pixel of their class."""
    image_id = "train_000000"
    absent = next(name for name in CLASSES if name not in mask_classes(root, image_id))
    xml = root / "Annotations" / f"{image_id}.xml"
    extra = f"<object><name>{absent}</name><difficult>1</difficult></object></annotation>"
    xml.write_text(xml.read_text().replace("</annotation>", extra))
    datamodule(root).prepare_data()
    xml.write_text(
        xml.read_text().replace("<difficult>1</difficult></object></annotation>", "</object></annotation>")
    )
    message, _ = prepare_fails(datamodule(root))
    assert f"lists <object> ['{absent}'] with no pixel" in message


def test_repeated_id_in_a_split_list_names_the_id_and_list(root):
    split_list = root / "ImageSets" / "Segmentation" / "train.txt"
    split_list.write_text(split_list.read_text() + "train_000003\n")
    message, _ = prepare_fails(datamodule(root))
    assert message == (
        f"{split_list}: 1 image id(s) listed more than once, first 'train_000003' (2 times); "
        "expected each id once"
    )


def test_the_first_faulty_id_in_list_order_and_the_count_are_named(root):
    truncate(root / "JPEGImages" / "train_000004.jpg")
    write_mask(root / "SegmentationClass" / "train_000001.png", np.full((48, 48), 7, np.uint8))
    message, _ = prepare_fails(datamodule(root))
    assert ": 2 of 6 image ids fail validation, first train_000001: mask" in message


def test_an_exif_rotated_image_is_compared_as_opencv_reads_it(tmp_path):
    """OpenCV applies the EXIF orientation; the mask must fit the image as the loader will see it."""
    image, mask = tmp_path / "a.jpg", tmp_path / "a.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated by 90 degrees
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(image, exif=exif)
    write_mask(mask, np.zeros((30, 50), np.uint8))
    assert cv2.imread(str(image)).shape[:2] == (50, 30)
    problem = image_id_problem(ImageFiles("a", image, mask), CLASSES)
    assert problem == f"a: mask {mask} size (30, 50) differs from image size (50, 30)"


# ---------------------------------------------------------------------------------- cache and settings
def test_a_second_run_reads_nothing_and_an_edited_file_is_read_again(root, monkeypatch):
    first = datamodule(root).validate_splits()
    assert sum(report.checked for report in first.values()) == 10
    assert sorted(path.name.split("-")[0] for path in (root / CACHE_FOLDER).iterdir()) == ["train", "val"]

    def no_decoding(*args):
        raise AssertionError("files were decoded although none changed")

    monkeypatch.setattr(split_validation, "problems_of", no_decoding)
    second = datamodule(root).validate_splits()
    assert {split: (report.checked, report.cached) for split, report in second.items()} == {
        "train": (0, 6),
        "val": (0, 4),
    }
    monkeypatch.undo()

    mask = root / "SegmentationClass" / "val_000002.png"
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    third = datamodule(root).validate_splits()
    assert (third["train"].checked, third["val"].checked) == (0, 1)


def test_ids_that_passed_stay_cached_while_a_faulty_one_is_read_each_run(root, monkeypatch):
    read_counts = []
    check_files = split_validation.check_files

    def counting_check_files(entries, *args):
        read_counts.append(len(entries))
        return check_files(entries, *args)

    monkeypatch.setattr(split_validation, "check_files", counting_check_files)
    truncate(root / "JPEGImages" / "train_000005.jpg")
    prepare_fails(datamodule(root))
    prepare_fails(datamodule(root))
    assert read_counts == [6, 1]  # the train split stops the run: val is not read yet
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"), ("Annotations", ".xml")):
        shutil.copy(root / folder / f"train_000004{suffix}", root / folder / f"train_000005{suffix}")
    datamodule(root).prepare_data()
    assert read_counts == [6, 1, 1, 4]


def test_other_class_names_do_not_reuse_the_cache(root):
    datamodule(root).validate_splits()
    cache = next((root / CACHE_FOLDER).glob("train-*.json"))
    assert validate_split([], CLASSES, "x", cache_file=cache).checked == 0
    files = [
        ImageFiles(
            image_id, root / "JPEGImages" / f"{image_id}.jpg", root / "SegmentationClass" / f"{image_id}.png"
        )
        for image_id in ("train_000000", "train_000001")
    ]
    assert validate_split(files, CLASSES, "x", cache_file=cache).checked == 2  # no XML: other files
    assert validate_split(files, CLASSES, "x", cache_file=cache).checked == 0
    assert validate_split(files, (*CLASSES, "ring"), "x", cache_file=cache).checked == 2


def test_off_skips_validation(root):
    truncate(root / "JPEGImages" / "train_000002.jpg")
    split_list = root / "ImageSets" / "Segmentation" / "val.txt"
    split_list.write_text(split_list.read_text() + "val_000000\n")
    module = datamodule(root, validate="off")
    module.prepare_data()
    assert module.validate_splits() == {}
    assert not (root / CACHE_FOLDER).exists()


def test_quick_checks_a_fixed_sample_and_every_id_for_repeats(root):
    assert quick_sample(6) == list(range(6))
    assert quick_sample(1000) == quick_sample(1000) and len(quick_sample(1000)) == 200
    assert len(quick_sample(10_000)) == 500 and quick_sample(10_000) == sorted(quick_sample(10_000))

    good = ImageFiles(
        "", root / "JPEGImages" / "train_000000.jpg", root / "SegmentationClass" / "train_000000.png"
    )
    truncate(root / "JPEGImages" / "train_000001.jpg")
    bad = ImageFiles("", root / "JPEGImages" / "train_000001.jpg", good.mask)
    unsampled = min(set(range(300)) - set(quick_sample(300)))
    files = [
        ImageFiles(f"id{position:03d}", *((bad if position == unsampled else good).paths()))
        for position in range(300)
    ]
    report = validate_split(files, CLASSES, "list.txt", mode="quick")
    assert (report.listed, report.checked) == (300, 200)
    with pytest.raises(
        InvalidData, match=rf"list\.txt: 1 of 300 image ids fail validation, first id{unsampled:03d}"
    ):
        validate_split(files, CLASSES, "list.txt", mode="full")
    sampled = quick_sample(300)[0]
    files[sampled] = ImageFiles(f"id{sampled:03d}", *bad.paths())
    with pytest.raises(InvalidData, match=r"1 of 200 image ids of the quick sample fail"):
        validate_split(files, CLASSES, "list.txt", mode="quick")
    with pytest.raises(InvalidData, match=r"first 'id001' \(2 times\)"):
        validate_split([*files, files[1]], CLASSES, "list.txt", mode="quick")


def test_unknown_mode_names_the_setting(root):
    with pytest.raises(
        InvalidSetting, match=r"^data\.validate='sometimes': expected one of \['full', 'quick', 'off'\]$"
    ):
        datamodule(root, validate="sometimes")


def test_pseudo_masks_are_not_compared_with_the_labels(root, tmp_path):
    """A pseudo mask may miss a labelled class; its size and values are still checked."""
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for image_id in (f"train_{index:06d}" for index in range(6)):
        write_mask(pseudo / f"{image_id}.png", np.zeros((48, 48), np.uint8))
    module = VOCDataModule(root, list(CLASSES), train_masks_dir=pseudo, image_size=48)
    assert module.validate_splits()["train"].checked == 6
    write_mask(pseudo / "train_000003.png", np.zeros((48, 40), np.uint8))
    message, _ = prepare_fails(VOCDataModule(root, list(CLASSES), train_masks_dir=pseudo, image_size=48))
    assert f"first train_000003: mask {pseudo / 'train_000003.png'} size (48, 40) differs" in message


# ------------------------------------------------------------------------------------------------ COCO
@pytest.fixture
def coco(tmp_path) -> TinyCOCO:
    return TinyCOCO(tmp_path / "coco2014")


@pytest.mark.parametrize("include_unannotated", [False, True])
def test_coco_split_without_annotations_names_the_file(coco, include_unannotated):
    path = coco.write_json("val2014", annotations=[])
    module = COCODataModule(coco.root, image_size=32, mask_workers=0, include_unannotated=include_unannotated)
    message, _ = prepare_fails(module)
    assert (
        message == f"{path}: 'annotations' is empty; expected at least one annotated image in split 'val2014'"
    )


def test_coco_image_listed_twice_names_the_id(coco):
    path = coco.write_json("val2014", images=[*coco.images["val2014"], coco.images["val2014"][0]])
    with pytest.raises(InvalidData, match=rf"^{path}: image id 42 is listed twice; expected each id once$"):
        build_coco_masks(coco.root, "val2014", num_workers=0)


def test_coco_truncated_image_names_the_annotation_file_and_the_id(coco):
    image = coco.root / "train2014" / "COCO_train2014_000000000025.jpg"
    truncate(image)
    message, _ = prepare_fails(COCODataModule(coco.root, image_size=32, mask_workers=0))
    assert message.startswith(f"{coco.root / 'annotations/instances_train2014.json'}: 1 of 3 image ids fail")
    assert f"first COCO_train2014_000000000025: image {image} does not decode completely" in message
    assert (coco.root / MASK_CACHE_FOLDER / CACHE_FOLDER).is_dir()


def test_coco_crowd_only_image_passes_although_its_label_has_no_pixel(coco):
    module = COCODataModule(coco.root, image_size=32, mask_workers=0)
    module.prepare_data()
    assert {split: report.cached for split, report in module.validate_splits().items()} == {
        "train2014": 3,
        "val2014": 2,
    }


def test_coco_mask_cache_follows_the_content_of_an_edit_of_the_same_size(coco):
    output = build_coco_masks(coco.root, "train2014", num_workers=0)
    dog, cat = COCO_CATEGORY_TO_CLASS[18], COCO_CATEGORY_TO_CLASS[17]
    stem = "COCO_train2014_000000000009"  # a dog (category 18) lies on a person
    assert dog in np.unique(read_mask(output / f"{stem}.png"))
    path = coco.root / "annotations" / "instances_train2014.json"
    before = path.stat()
    text = path.read_text()
    edited = text.replace('"category_id": 18', '"category_id": 17')
    assert edited != text and len(edited) == len(text)
    path.write_text(edited)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even the modification time is kept
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns

    build_coco_masks(coco.root, "train2014", num_workers=0)
    values = np.unique(read_mask(output / f"{stem}.png"))
    assert cat in values and dog not in values
    dataset = COCOSegmentationDataset(coco.root, "train2014")
    labels = dataset.labels[dataset.image_ids.index(stem)]
    assert labels[cat - 1] == 1 and labels[dog - 1] == 0

"""The built-in dataset generator: determinism, VOC file formats, statistics, atomic writes."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from rca_lightning.data.synthetic import COMPLETE_MARKER, SyntheticVOCGenerator
from rca_lightning.data.synthetic_catalogue import CLASS_CATALOGUE, SYNTHETIC_CLASS_NAMES
from rca_lightning.data.synthetic_renderer import border_band
from rca_lightning.data.voc_classes import VOC_CLASS_NAMES, voc_palette
from rca_lightning.utils.errors import InvalidSetting
from tests.references import reference_border_band, reference_voc_palette

CLASSES = ("disc", "square", "triangle", "star")


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "VOC2012"
    SyntheticVOCGenerator(CLASSES, num_train=40, num_val=8, image_size=64, seed=3).generate(root)
    return root


def all_ids(root: Path) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / "trainval.txt").read_text().split()


def parse_objects(xml_path: Path) -> list[tuple[str, tuple[int, int, int, int]]]:
    objects = []
    for obj in ET.parse(xml_path).getroot().findall("object"):
        box = obj.find("bndbox")
        objects.append(
            (obj.findtext("name"), tuple(int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
        )
    return objects


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_voc_palette_matches_devkit_reference():
    assert (
        VOC_CLASS_NAMES[0] == "aeroplane"
        and VOC_CLASS_NAMES[-1] == "tvmonitor"
        and len(VOC_CLASS_NAMES) == 20
    )
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert [tuple(int(c) for c in row) for row in palette] == reference_voc_palette()
    assert tuple(palette[15]) == (192, 128, 128)  # person, as in the VOC devkit


def test_border_band_matches_pixel_reference():
    rng = np.random.default_rng(0)
    instance_map = np.zeros((24, 24), np.uint8)
    instance_map[3:15, 4:12] = 1
    instance_map[10:20, 9:22] = 2
    instance_map[rng.random((24, 24)) < 0.02] = 3  # isolated pixels
    assert border_band(instance_map).tolist() == reference_border_band(instance_map.tolist())


def test_catalogue_has_distinct_classes():
    assert len(SYNTHETIC_CLASS_NAMES) >= 8
    styles = [CLASS_CATALOGUE[name] for name in SYNTHETIC_CLASS_NAMES]
    assert len({s.shape for s in styles}) == len(styles)
    assert len({s.texture for s in styles}) == len(styles)
    assert len({s.hue for s in styles}) == len(styles)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    settings = dict(class_names=("ring", "cross", "heart"), num_train=4, num_val=2, image_size=48)
    SyntheticVOCGenerator(seed=7, **settings).generate(tmp_path / "a")
    SyntheticVOCGenerator(seed=7, **settings).generate(tmp_path / "b")
    SyntheticVOCGenerator(seed=8, **settings).generate(tmp_path / "c")
    first, second, other = (read_tree(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == other.keys()
    jpegs = [key for key in first if key.startswith("JPEGImages")]
    assert all(first[key] != other[key] for key in jpegs)


def test_layout_and_complete_marker(dataset_root):
    segmentation_sets = dataset_root / "ImageSets" / "Segmentation"
    train = (segmentation_sets / "train.txt").read_text().split()
    val = (segmentation_sets / "val.txt").read_text().split()
    assert len(train) == 40 and len(val) == 8 and not set(train) & set(val)
    for image_id in train + val:
        for folder, suffix in (
            ("JPEGImages", "jpg"),
            ("SegmentationClass", "png"),
            ("SegmentationObject", "png"),
            ("Annotations", "xml"),
        ):
            assert (dataset_root / folder / f"{image_id}.{suffix}").is_file()
    assert (dataset_root / "class_names.txt").read_text().splitlines() == list(CLASSES)
    marker = json.loads((dataset_root / COMPLETE_MARKER).read_text())
    assert marker["class_names"] == list(CLASSES) and marker["seed"] == 3
    assert SyntheticVOCGenerator(CLASSES, num_train=40, num_val=8, image_size=64, seed=3).is_complete(
        dataset_root
    )
    assert not SyntheticVOCGenerator(CLASSES, num_train=40, num_val=8, image_size=64, seed=4).is_complete(
        dataset_root
    )
    assert not SyntheticVOCGenerator(CLASSES, num_train=40, num_val=8, image_size=96, seed=3).is_complete(
        dataset_root
    )
    # nothing left behind by the atomic write
    assert [p.name for p in dataset_root.parent.iterdir()] == ["VOC2012"]


def test_images_are_rgb_jpegs_of_the_set_size(dataset_root):
    for image_id in all_ids(dataset_root)[:10]:
        with Image.open(dataset_root / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (64, 64)


def test_masks_are_voc_palette_pngs_with_border_band(dataset_root):
    palette = voc_palette().reshape(-1).tolist()
    for image_id in all_ids(dataset_root):
        with Image.open(dataset_root / "SegmentationClass" / f"{image_id}.png") as png:
            assert png.format == "PNG" and png.mode == "P"
            assert png.getpalette()[: len(palette)] == palette
            mask = np.array(png)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(len(CLASSES) + 1)) | {255}
        assert 255 in values and values - {0, 255}
        # no two different labels touch without the 255 band between them (8-neighbourhood)
        labelled = np.where(mask == 255, -1, mask.astype(np.int64))
        padded = np.pad(labelled, 1, constant_values=-1)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                neighbour = padded[1 + dy : 65 + dy, 1 + dx : 65 + dx]
                clash = (labelled >= 0) & (neighbour >= 0) & (neighbour != labelled)
                assert not clash.any(), image_id
        # the band is thin: every 255 pixel has a labelled pixel within 3 px (thin star tips are all band)
        near_label = cv2.dilate((labelled >= 0).astype(np.uint8), np.ones((7, 7), np.uint8))
        assert near_label[mask == 255].all()


def test_xml_names_and_boxes_match_masks(dataset_root):
    for image_id in all_ids(dataset_root):
        root = ET.parse(dataset_root / "Annotations" / f"{image_id}.xml").getroot()
        assert root.tag == "annotation" and root.findtext("filename") == f"{image_id}.jpg"
        assert (root.findtext("size/width"), root.findtext("size/height"), root.findtext("size/depth")) == (
            "64",
            "64",
            "3",
        )
        assert all(obj.findtext("difficult") == "0" for obj in root.findall("object"))
        objects = parse_objects(dataset_root / "Annotations" / f"{image_id}.xml")
        class_mask = np.array(Image.open(dataset_root / "SegmentationClass" / f"{image_id}.png"))
        object_mask = np.array(Image.open(dataset_root / "SegmentationObject" / f"{image_id}.png"))
        mask_classes = {CLASSES[v - 1] for v in np.unique(class_mask) if 0 < v < 255}
        assert {name for name, _ in objects} == mask_classes
        assert set(np.unique(object_mask).tolist()) - {0, 255} == set(range(1, len(objects) + 1))
        for instance, (name, (xmin, ymin, xmax, ymax)) in enumerate(objects, start=1):
            ys, xs = np.nonzero(object_mask == instance)
            assert len(xs) > 0
            # VOC boxes are 1-based and inclusive; they enclose the instance's labelled pixels ...
            assert xmin >= 1 and xmin <= xmax <= 64 and ymin >= 1 and ymin <= ymax <= 64
            assert (
                xmin <= xs.min() + 1
                and ymin <= ys.min() + 1
                and xmax >= xs.max() + 1
                and ymax >= ys.max() + 1
            )
            # ... and are tight: each box edge touches the instance or its border band
            inside_box = object_mask[ymin - 1 : ymax, xmin - 1 : xmax]
            touches = (inside_box == instance) | (inside_box == 255)
            assert touches[0].any() and touches[-1].any() and touches[:, 0].any() and touches[:, -1].any()
            assert set(np.unique(class_mask[object_mask == instance]).tolist()) == {CLASSES.index(name) + 1}


def test_several_objects_per_image_and_balanced_classes(dataset_root):
    counts = np.zeros(len(CLASSES))
    objects_per_image = []
    for image_id in all_ids(dataset_root):
        objects = parse_objects(dataset_root / "Annotations" / f"{image_id}.xml")
        objects_per_image.append(len(objects))
        for name, _ in objects:
            counts[CLASSES.index(name)] += 1
    assert min(objects_per_image) >= 1 and max(objects_per_image) <= 4
    assert np.mean(objects_per_image) >= 1.8
    assert counts.min() >= 0.5 * counts.mean() and counts.max() <= 1.5 * counts.mean()


def test_background_holds_class_colours(dataset_root):
    """Distractors and colour fields reuse the class hues, so a hue threshold cannot segment."""
    in_range_background, in_range_object = [], []
    for image_id in all_ids(dataset_root):
        image = cv2.imread(str(dataset_root / "JPEGImages" / f"{image_id}.jpg"))
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV_FULL)
        hue = hsv[:, :, 0].astype(np.float64) * 360 / 256
        saturated = hsv[:, :, 1] > 100
        mask = np.array(Image.open(dataset_root / "SegmentationClass" / f"{image_id}.png"))
        for index, name in enumerate(CLASSES, start=1):
            style = CLASS_CATALOGUE[name]
            distance = np.abs((hue - style.hue + 180) % 360 - 180)
            in_range = (distance < style.hue_width) & saturated
            if (mask == index).any():
                in_range_object.append(in_range[mask == index].mean())
            in_range_background.append(in_range[mask == 0].sum())
    assert np.mean(in_range_object) > 0.2  # the class colours are there on the objects
    assert np.sum(in_range_background) > 0.01 * len(all_ids(dataset_root)) * 64 * 64


def test_generate_replaces_own_dataset_with_other_settings(tmp_path):
    root = tmp_path / "VOC2012"
    SyntheticVOCGenerator(("disc", "ring"), num_train=2, num_val=1, image_size=40, seed=0).generate(root)
    other = SyntheticVOCGenerator(("disc", "ring"), num_train=3, num_val=1, image_size=40, seed=0)
    assert not other.is_complete(root)
    other.generate(root)
    assert other.is_complete(root)
    assert len((root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["VOC2012"]


def test_generate_refuses_foreign_folder(tmp_path):
    root = tmp_path / "VOC2012"
    root.mkdir()
    (root / "precious.txt").write_text("user data")
    with pytest.raises(InvalidSetting, match="VOC2012.*not a synthetic dataset"):
        SyntheticVOCGenerator(("disc",), num_train=1, num_val=1, image_size=32).generate(root)
    assert (root / "precious.txt").read_text() == "user data"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(class_names=("disc", "dog")), r"class_names: unknown synthetic class\(es\) \['dog'\]"),
        (dict(class_names=()), "class_names"),
        (dict(class_names=("disc", "disc")), "class_names: duplicate"),
        (dict(class_names=("disc",), image_size=16), "image_size=16"),
        (dict(class_names=("disc",), max_objects=0), "max_objects=0"),
        (dict(class_names=("disc",), num_train=0), "num_train=0"),
    ],
)
def test_bad_settings_name_the_setting(kwargs, pattern):
    with pytest.raises(InvalidSetting, match=pattern):
        SyntheticVOCGenerator(**kwargs)

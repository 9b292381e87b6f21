"""COCO 2014 on a tiny dataset in the real formats: JPEGs, instances JSON with polygon, RLE and crowd."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from pycocotools import mask as mask_utils

from rca_lightning.data import (
    COCO_CATEGORIES,
    COCO_CATEGORY_TO_CLASS,
    COCO_CLASS_NAMES,
    COCODataModule,
    COCOSegmentationDataset,
    build_coco_masks,
    voc_palette,
)
from rca_lightning.data.coco_masks import INDEX_FILE
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from tests.stage_helpers import assert_report_is_consistent, run_tiny_pipeline

OFFICIAL_ID_GAPS = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def column_major_runs(binary: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts: run lengths over the column-major pixels, starting with zeros."""
    flat = binary.flatten(order="F").tolist()
    runs, current, length = [], 0, 0
    for value in flat:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = value, 1
    runs.append(length)
    return runs


def rectangle_polygon(y0: int, y1: int, x0: int, x1: int) -> list[float]:
    """A polygon whose rasterisation covers rows y0..y1-1 and columns x0..x1-1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def disc(height: int, width: int, cy: float, cx: float, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return ((rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2).astype(np.uint8)


class TinyCOCO:
    """Writes root/{train2014,val2014}/*.jpg and root/annotations/instances_*.json; knows the answers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.masks: dict[str, dict[str, np.ndarray]] = {"train2014": {}, "val2014": {}}
        self.labels: dict[str, dict[str, set[str]]] = {"train2014": {}, "val2014": {}}
        self.images: dict[str, list[dict]] = {"train2014": [], "val2014": []}
        self.annotations: dict[str, list[dict]] = {"train2014": [], "val2014": []}
        self._next_annotation = 1
        self._build()
        for split in ("train2014", "val2014"):
            self.write_json(split)

    def add_image(self, split: str, image_id: int, height: int, width: int) -> str:
        file_name = f"COCO_{split}_{image_id:012d}.jpg"
        folder = self.root / split
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(image_id).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / file_name, quality=90)
        self.images[split].append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        return Path(file_name).stem

    def add_annotation(self, split, image_id, category_id, segmentation, area, iscrowd=0) -> None:
        self.annotations[split].append(
            {
                "id": self._next_annotation,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": segmentation,
                "area": float(area),
                "bbox": [0, 0, 1, 1],
                "iscrowd": iscrowd,
            }
        )
        self._next_annotation += 1

    def _build(self) -> None:
        # train 9 (40x48): a crowd of people (uncompressed RLE), a person polygon over part of it, a dog
        # (compressed RLE) lying on the person. Expected: crowd 255, then person, then the smaller dog.
        stem = self.add_image("train2014", 9, 40, 48)
        crowd = np.zeros((40, 48), np.uint8)
        crowd[0:12, 0:16] = 1
        self.add_annotation("train2014", 9, 1, {"size": [40, 48], "counts": column_major_runs(crowd)}, 192, 1)
        self.add_annotation("train2014", 9, 1, [rectangle_polygon(6, 30, 4, 20)], 24 * 16)
        dog = disc(40, 48, 20, 18, 6)
        dog_rle = mask_utils.encode(np.asfortranarray(dog))
        self.add_annotation(
            "train2014", 9, 18, {"size": [40, 48], "counts": dog_rle["counts"].decode()}, int(dog.sum())
        )
        expected = np.zeros((40, 48), np.uint8)
        expected[crowd == 1] = 255
        expected[6:30, 4:20] = COCO_CATEGORY_TO_CLASS[1]
        expected[dog == 1] = COCO_CATEGORY_TO_CLASS[18]
        self.masks["train2014"][stem] = expected
        self.labels["train2014"][stem] = {"person", "dog"}

        # train 25 (32x40): a toothbrush in two polygon parts (id 90 -> 80), a stop sign (id 13 -> 12).
        stem = self.add_image("train2014", 25, 32, 40)
        self.add_annotation(
            "train2014", 25, 90, [rectangle_polygon(2, 6, 2, 12), rectangle_polygon(20, 30, 30, 38)], 120
        )
        self.add_annotation("train2014", 25, 13, [rectangle_polygon(10, 18, 10, 20), [1, 1, 2, 2]], 80)
        expected = np.zeros((32, 40), np.uint8)
        expected[2:6, 2:12] = expected[20:30, 30:38] = 80
        expected[10:18, 10:20] = 12
        self.masks["train2014"][stem] = expected
        self.labels["train2014"][stem] = {"toothbrush", "stop sign"}

        # train 30 (36x36): only a crowd: labelled, but its pixels are ignored.
        stem = self.add_image("train2014", 30, 36, 36)
        sheep = disc(36, 36, 18, 18, 10)
        self.add_annotation(
            "train2014", 30, 20, {"size": [36, 36], "counts": column_major_runs(sheep)}, 300, 1
        )
        self.masks["train2014"][stem] = np.where(sheep == 1, 255, 0).astype(np.uint8)
        self.labels["train2014"][stem] = {"sheep"}

        # train 34: no annotation at all.
        self.unannotated_stem = self.add_image("train2014", 34, 24, 24)

        # val 42 (40x40): a car polygon; val 73 (40x48): a backpack (27 -> 25) as compressed RLE.
        stem = self.add_image("val2014", 42, 40, 40)
        self.add_annotation("val2014", 42, 3, [rectangle_polygon(5, 35, 8, 30)], 660)
        expected = np.zeros((40, 40), np.uint8)
        expected[5:35, 8:30] = 3
        self.masks["val2014"][stem], self.labels["val2014"][stem] = expected, {"car"}
        stem = self.add_image("val2014", 73, 40, 48)
        backpack = disc(40, 48, 25, 30, 9)
        rle = mask_utils.encode(np.asfortranarray(backpack))
        self.add_annotation("val2014", 73, 27, {"size": [40, 48], "counts": rle["counts"].decode()}, 250)
        self.masks["val2014"][stem] = backpack * 25
        self.labels["val2014"][stem] = {"backpack"}

    def categories(self) -> list[dict]:
        entries = [{"id": i, "name": name, "supercategory": "x"} for i, name in COCO_CATEGORIES]
        return entries[::-1]  # not sorted in the file: the mapping must sort by id

    def write_json(self, split: str, **replace) -> Path:
        content = {
            "info": {"description": "tiny"},
            "licenses": [],
            "images": self.images[split],
            "annotations": self.annotations[split],
            "categories": self.categories(),
        }
        content.update(replace)
        path = self.root / "annotations" / f"instances_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
        return path


@pytest.fixture
def coco(tmp_path) -> TinyCOCO:
    return TinyCOCO(tmp_path / "coco2014")


def label_vector(names: set[str]) -> np.ndarray:
    vector = np.zeros(80, np.float32)
    vector[[COCO_CLASS_NAMES.index(name) for name in names]] = 1.0
    return vector


def test_category_table_maps_sparse_ids_to_1_to_80():
    assert len(COCO_CATEGORIES) == 80 and len(set(COCO_CLASS_NAMES)) == 80
    ids = [category_id for category_id, _ in COCO_CATEGORIES]
    assert ids == sorted(ids) and sorted(set(range(1, 91)) - set(ids)) == OFFICIAL_ID_GAPS
    assert list(COCO_CATEGORY_TO_CLASS.values()) == list(range(1, 81))
    expected = {1: 1, 2: 2, 11: 11, 13: 12, 27: 25, 67: 61, 90: 80}
    assert {category_id: COCO_CATEGORY_TO_CLASS[category_id] for category_id in expected} == expected
    assert COCO_CLASS_NAMES[COCO_CATEGORY_TO_CLASS[18] - 1] == "dog"


@pytest.mark.parametrize("workers", [0, 2])
def test_masks_and_labels_pixel_for_pixel(coco, workers):
    for split in ("train2014", "val2014"):
        build_coco_masks(coco.root, split, num_workers=workers)
        dataset = COCOSegmentationDataset(coco.root, split)
        assert sorted(dataset.image_ids) == sorted(coco.masks[split])  # the unannotated image is left out
        for index, stem in enumerate(dataset.image_ids):
            item = dataset[index]
            np.testing.assert_array_equal(item["mask"].numpy(), coco.masks[split][stem])
            np.testing.assert_array_equal(item["labels"].numpy(), label_vector(coco.labels[split][stem]))
            assert item["image_id"] == stem and item["image"].shape[1:] == coco.masks[split][stem].shape
        with Image.open(dataset.mask_path(dataset.image_ids[0])) as png:
            assert png.mode == "P"


def test_parallel_and_serial_masks_are_byte_identical(coco, tmp_path):
    serial = build_coco_masks(coco.root, "train2014", cache_dir=tmp_path / "serial", num_workers=0)
    parallel = build_coco_masks(coco.root, "train2014", cache_dir=tmp_path / "parallel", num_workers=2)
    names = sorted(p.name for p in serial.iterdir())
    assert names == sorted(p.name for p in parallel.iterdir())
    assert len([n for n in names if n.endswith(".png")]) == 3 and not [n for n in names if n.endswith(".tmp")]
    for name in names:
        if name.endswith(".png"):
            assert (serial / name).read_bytes() == (parallel / name).read_bytes()


def test_masks_are_cached_resumed_and_rebuilt_when_the_annotations_change(coco):
    output = build_coco_masks(coco.root, "train2014", num_workers=0)
    assert output == coco.root / "SegmentationClassCOCO" / "train2014"
    stamps = {p.name: p.stat().st_mtime_ns for p in output.iterdir()}
    build_coco_masks(coco.root, "train2014", num_workers=0)  # complete: nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in output.iterdir()} == stamps

    resumed = "COCO_train2014_000000000025.png"  # an interrupted build: one mask and the index missing
    (output / resumed).unlink()
    (output / INDEX_FILE).unlink()
    build_coco_masks(coco.root, "train2014", num_workers=0)
    after = {p.name: p.stat().st_mtime_ns for p in output.iterdir()}
    assert (output / resumed).is_file() and after[INDEX_FILE] != stamps[INDEX_FILE]
    assert all(after[name] == stamp for name, stamp in stamps.items() if name not in (resumed, INDEX_FILE))

    coco.annotations["train2014"] = [a for a in coco.annotations["train2014"] if a["category_id"] != 18]
    coco.write_json("train2014")  # the dog is gone: every mask is rebuilt
    build_coco_masks(coco.root, "train2014", num_workers=0)
    dataset = COCOSegmentationDataset(coco.root, "train2014")
    item = dataset[dataset.image_ids.index("COCO_train2014_000000000009")]
    assert 17 not in item["mask"].unique().tolist() and item["labels"][COCO_CLASS_NAMES.index("dog")] == 0


def test_unannotated_images_can_be_kept_with_zero_labels_and_background(coco, tmp_path):
    build_coco_masks(
        coco.root, "train2014", cache_dir=tmp_path / "all", num_workers=0, include_unannotated=True
    )
    dataset = COCOSegmentationDataset(coco.root, "train2014", cache_dir=tmp_path / "all")
    assert len(dataset) == 4
    item = dataset[dataset.image_ids.index(coco.unannotated_stem)]
    assert item["labels"].sum() == 0 and (item["mask"] == 0).all() and item["mask"].shape == (24, 24)


def test_datamodule_builds_once_and_loads_batches(coco):
    datamodule = COCODataModule(coco.root, image_size=32, batch_size=2, mask_workers=0)
    assert datamodule.num_classes == 80
    datamodule.prepare_data()
    assert datamodule.train_dataset is None
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) == 3 and len(datamodule.val_dataset) == 2
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["labels"].shape == (2, 80)
    assert batch["mask"].shape == (2, 32, 32)
    with pytest.raises(InvalidSetting, match="class_names: .* expected the 80 COCO names"):
        COCODataModule(coco.root, class_names=["person", "dog"])


def test_setup_before_prepare_data_says_what_to_run(coco):
    with pytest.raises(MissingInput, match=r"index\.json not found: .*prepare_data"):
        COCODataModule(coco.root, mask_workers=0).setup("fit")


def test_missing_layout_names_every_missing_piece(coco):
    (coco.root / "annotations" / "instances_val2014.json").unlink()
    os.rename(coco.root / "train2014", coco.root / "images")
    with pytest.raises(MissingInput, match=r"train2014 is missing .*instances_val2014\.json is missing"):
        COCODataModule(coco.root, mask_workers=0).prepare_data()


@pytest.mark.parametrize(
    "replace, message",
    [
        ({"annotations": [{"id": 99, "image_id": 42, "category_id": 12, "segmentation": [], "area": 0}]},
         r"annotation 99 has category id 12, not a COCO category"),
        ({"annotations": [{"id": 98, "image_id": 42, "category_id": 91, "segmentation": [], "area": 0}]},
         r"annotation 98 has category id 91"),
        ({"images": []}, r"empty annotation file: no images"),
        ({"categories": [{"id": 1, "name": "person"}]}, r"categories differ from the 80 COCO 2014"),
        ({"categories": [{"id": 1, "name": "human"}] + [{"id": i, "name": n} for i, n in COCO_CATEGORIES[1:]]},  # noqa: E501
         r"unexpected \(id, name\) \[\(1, 'human'\)\]"),
        ({"annotations": [{"id": 97, "image_id": 5, "category_id": 1, "segmentation": [], "area": 0}]},
         r"annotation 97 refers to unknown image 5"),
        ({"annotations": [{"id": 96, "image_id": 42, "category_id": 1, "area": 1,
                           "segmentation": {"size": [10, 10], "counts": [100]}}]},
         r"annotation 96 of image COCO_val2014_000000000042\.jpg: RLE size \(10, 10\) differs"),
    ],
)  # fmt: skip
def test_bad_annotation_files_name_the_file(coco, replace, message):
    path = coco.write_json("val2014", **replace)
    with pytest.raises(InvalidData, match=message) as error:
        build_coco_masks(coco.root, "val2014", num_workers=0)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_empty_annotation_file_names_the_file(coco):
    path = coco.root / "annotations" / "instances_val2014.json"
    path.write_text("")
    with pytest.raises(InvalidData, match=rf"{path}: empty annotation file"):
        build_coco_masks(coco.root, "val2014", num_workers=0)


def test_mask_of_another_size_names_the_file(coco):
    coco.images["val2014"][0]["height"] = 30  # the JSON disagrees with the JPEG (40 x 40)
    coco.annotations["val2014"][0]["segmentation"] = [rectangle_polygon(5, 25, 8, 30)]
    coco.write_json("val2014")
    build_coco_masks(coco.root, "val2014", num_workers=0)
    dataset = COCOSegmentationDataset(coco.root, "val2014")
    with pytest.raises(InvalidData, match=r"COCO_val2014_000000000042\.png: mask size \(30, 40\) differs"):
        dataset[0]


def test_mask_values_outside_the_classes_name_the_file(coco):
    output = build_coco_masks(coco.root, "val2014", num_workers=0)
    path = output / "COCO_val2014_000000000042.png"
    bad = coco.masks["val2014"]["COCO_val2014_000000000042"].copy()
    bad[0, 0] = 81
    png = Image.fromarray(bad, mode="P")
    png.putpalette(voc_palette().reshape(-1).tolist())
    png.save(path)
    dataset = COCOSegmentationDataset(coco.root, "val2014")
    with pytest.raises(InvalidData, match=rf"{path.name}: mask value 81 outside 0\.\.80 and 255"):
        dataset[0]


@pytest.mark.parametrize(
    "file_name, problem",
    [
        ("../x.jpg", "has a part '..' that is '..'"),
        ("/tmp/x.jpg", "is an absolute path"),
        ("sub\\..\\..\\x.jpg", "has a part 'sub\\\\..\\\\..\\\\x.jpg' that holds a path separator"),
        ("x\0.jpg", "has a part 'x\\x00.jpg' that holds a NUL character"),
        ("", "has a part '' that is empty"),
    ],
)
def test_a_file_name_leading_out_of_the_image_folder_is_refused(coco, tmp_path, file_name, problem):
    coco.images["val2014"][1]["file_name"] = file_name
    path = coco.write_json("val2014")
    with pytest.raises(InvalidData) as error:
        build_coco_masks(coco.root, "val2014", cache_dir=tmp_path / "masks", num_workers=0)
    message = str(error.value)
    assert message.startswith(f"{path}: image 73 file_name {file_name!r} {problem}")
    assert message.endswith("; expected a relative path inside the image folder") and "\n" not in message
    assert not (tmp_path / "masks").exists() and not (tmp_path / "x.png").exists()


def test_two_images_with_one_file_name_stem_are_refused(coco, tmp_path):
    coco.images["val2014"][1]["file_name"] = "more/COCO_val2014_000000000042.jpg"  # inside, but one mask name
    path = coco.write_json("val2014")
    with pytest.raises(InvalidData) as error:
        build_coco_masks(coco.root, "val2014", cache_dir=tmp_path / "masks", num_workers=0)
    assert str(error.value) == (
        f"{path}: images 42 and 73 share the file name stem 'COCO_val2014_000000000042'; expected distinct "
        "stems (each names the image's mask and outputs)"
    )


def test_a_mask_index_edited_to_lead_out_is_refused(coco):
    output = build_coco_masks(coco.root, "val2014", num_workers=0)
    index = json.loads((output / INDEX_FILE).read_text())
    index["images"][0]["file_name"] = "../../../x.jpg"
    (output / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(
        InvalidData, match=rf"^{output / INDEX_FILE}: image 42 file_name '../../../x.jpg' has a"
    ):
        COCOSegmentationDataset(coco.root, "val2014")


@pytest.mark.slow
def test_rca_pipeline_runs_end_to_end_on_tiny_coco(coco, tmp_path):
    run_dir = tmp_path / "run"
    report = run_tiny_pipeline("coco", coco.root, run_dir, "data.mask_workers=2")
    assert_report_is_consistent(report)
    assert len(report["dataset"]["class_names"]) == 80 and report["cam_split"] == "train2014"
    assert len(list((coco.root / "SegmentationClassCOCO" / "train2014").glob("*.png"))) == 3
    # The segmentation network trained on the pseudo masks of every annotated train image.
    masks = sorted(path.stem for path in (run_dir / "pseudo_masks" / "masks").glob("*.png"))
    assert masks == sorted(
        path.stem for path in (coco.root / "SegmentationClassCOCO" / "train2014").glob("*.png")
    )
    seg_config = OmegaConf.load(run_dir / "segmentation" / ".hydra" / "config.yaml")
    assert seg_config.data._target_.endswith("COCODataModule")
    assert seg_config.data.train_masks_dir == str(run_dir / "pseudo_masks" / "masks")

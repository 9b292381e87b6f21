"""COCO 2014 for weakly supervised segmentation: 80-class image labels and 81-class semantic masks.

Expected layout (``root`` is given as ``data.root``)::

    root/train2014/COCO_train2014_<12 digits>.jpg
    root/val2014/COCO_val2014_<12 digits>.jpg
    root/annotations/instances_train2014.json
    root/annotations/instances_val2014.json

The instances JSON is read and indexed with pycocotools' ``COCO``; semantic masks are rendered once from its
annotations with ``pycocotools.mask`` and cached as one PNG per image (default
``root/SegmentationClassCOCO/<split>/<image stem>.png``, palette PNG, 0 background, 1..80 classes, 255
ignore) plus ``index.json`` (image list, sizes and image-level labels) written last: its presence with a
matching signature means the split is complete (:mod:`rca_lightning.data.coco_masks`).

Class mapping: COCO category ids are sparse (1..90, ten unused). The categories of the JSON, sorted by
id, must be exactly ``COCO_CATEGORIES``; category id ``COCO_CATEGORIES[i][0]`` becomes mask value
``i + 1`` and label index ``i`` (``COCO_CATEGORY_TO_CLASS``). E.g. person 1 -> 1, bicycle 2 -> 2,
stop sign 13 -> 12, backpack 27 -> 25, toothbrush 90 -> 80.

Rendering rules: crowd regions (``iscrowd=1``) are painted 255 first; the other instances are then
painted in order of decreasing area, so a small object lying on a large one stays visible and pixels
of a crowd region covered by a single instance get that instance's class. Image-level labels are the
classes of all annotations, crowd ones included. Images without any annotation (about 700 in train2014,
370 in val2014) are left out by default, which gives the 82,081 / 40,137 images of the WSSS protocol;
with ``include_unannotated=True`` they are kept with zero labels and an all-background mask.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycocotools.coco import COCO

from rca_lightning.data.image_ids import relative_path_problem, unsafe_name_reason
from rca_lightning.utils.errors import InvalidData, MissingInput

# The largest image side a record may give (a JPEG's limit): the masks are rendered at the recorded size.
MAX_IMAGE_SIDE = 65535

COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"),
    (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
    (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"),
    (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"),
    (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"),
    (90, "toothbrush"),
)  # fmt: skip
"""The 80 COCO 2014 detection categories as (category id, name), sorted by id."""

COCO_CLASS_NAMES: tuple[str, ...] = tuple(name for _, name in COCO_CATEGORIES)
"""The 80 foreground class names; mask value of ``COCO_CLASS_NAMES[i]`` is ``i + 1``."""

COCO_CATEGORY_TO_CLASS: dict[int, int] = {
    category_id: i + 1 for i, (category_id, _) in enumerate(COCO_CATEGORIES)
}
"""COCO category id (1..90, sparse) -> mask value 1..80 (label index = value - 1)."""


@dataclass(frozen=True)
class COCOInstance:
    """One instance annotation reduced to what mask rendering needs."""

    annotation_id: int
    class_value: int  # 1..80
    segmentation: list | dict
    iscrowd: bool
    area: float


@dataclass
class COCOImageRecord:
    """One image of a split and its instances."""

    image_id: int
    file_name: str
    height: int
    width: int
    instances: list[COCOInstance] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem

    @property
    def class_values(self) -> list[int]:
        """Sorted mask values (1..80) of the classes present, crowd annotations included."""
        return sorted({instance.class_value for instance in self.instances})


def annotation_file(root: str | os.PathLike, split: str) -> Path:
    """``root/annotations/instances_<split>.json``."""
    return Path(root) / "annotations" / f"instances_{split}.json"


def check_coco_layout(root: str | os.PathLike, splits: Sequence[str]) -> None:
    """Raise ``MissingInput`` naming every missing folder and annotation file (one line)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInput(
            f"data.root={root} not found: expected a COCO 2014 folder with train2014/, val2014/ "
            "and annotations/instances_{train,val}2014.json"
        )
    problems = []
    for split in dict.fromkeys(splits):
        if not (root / split).is_dir():
            problems.append(f"image folder {root / split} is missing ({split}.zip of COCO 2014)")
        if not annotation_file(root, split).is_file():
            problems.append(
                f"annotation file {annotation_file(root, split)} is missing (annotations_trainval2014.zip)"
            )
    if problems:
        raise MissingInput(f"COCO layout under {root} is incomplete: " + "; ".join(problems))


def category_mapping(categories: list[dict], source: Path) -> dict[int, int]:
    """Check a JSON's categories against ``COCO_CATEGORIES``; return category id -> mask value.

    Args:
        categories: the ``categories`` list of an instances JSON.
        source: the JSON file, for error messages.
    """
    try:
        found = sorted((int(category["id"]), str(category["name"])) for category in categories)
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidData(
            f"{source}: malformed 'categories' entry ({error!r}); expected id and name"
        ) from error
    if tuple(found) != COCO_CATEGORIES:
        official = dict(COCO_CATEGORIES)
        differing = [entry for entry in found if official.get(entry[0]) != entry[1]]
        absent = sorted(set(official) - {category_id for category_id, _ in found})
        raise InvalidData(
            f"{source}: categories differ from the 80 COCO 2014 categories: unexpected (id, name) "
            f"{differing[:5]}, missing ids {absent[:5]}"
        )
    return {category_id: i + 1 for i, (category_id, _) in enumerate(found)}


def load_coco(path: str | os.PathLike) -> COCO:
    """pycocotools' index of an instances JSON (its ``dataset``, ``imgs``, ``cats``, ``imgToAnns``);
    InvalidData naming the file where it cannot be read as one."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise InvalidData(f"{path}: empty annotation file; expected COCO instances JSON")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            return COCO(str(path))
    except json.JSONDecodeError as error:
        raise InvalidData(f"{path}: not valid JSON ({error})") from error
    except AssertionError as error:
        raise InvalidData(f"{path}: top level is not an object; expected COCO instances JSON") from error
    except (KeyError, TypeError) as error:
        raise InvalidData(
            f"{path}: an entry lacks {error!r}; expected an id on every image, annotation and category, "
            "and an image_id and category_id on every annotation"
        ) from error


def read_coco_instances(path: str | os.PathLike) -> list[COCOImageRecord]:
    """Read an instances JSON (pycocotools' ``COCO``) into per-image records (images sorted by id).

    Raises ``InvalidData`` naming the file for an empty or malformed file, an image id listed twice, an
    annotation of an unknown image, or a category id that is not one of the 80 COCO categories.
    """
    path = Path(path)
    coco = load_coco(path)
    content = coco.dataset
    missing_keys = [key for key in ("images", "annotations", "categories") if key not in content]
    if missing_keys:
        raise InvalidData(f"{path}: missing keys {missing_keys}; expected COCO instances JSON")
    if not content["images"]:
        raise InvalidData(f"{path}: empty annotation file: no images listed")
    if len(coco.imgs) != len(content["images"]):
        ids = collections.Counter(image["id"] for image in content["images"])
        twice = next(image_id for image_id, count in ids.items() if count > 1)
        raise InvalidData(f"{path}: image id {twice} is listed twice; expected each id once")
    mapping = category_mapping(coco.loadCats(coco.getCatIds()), path)
    unknown = sorted(set(coco.imgToAnns) - set(coco.imgs), key=str)
    if unknown:
        annotation = coco.imgToAnns[unknown[0]][0]
        raise InvalidData(f"{path}: annotation {annotation.get('id')} refers to unknown image {unknown[0]}")
    records = []
    for image in coco.loadImgs(sorted(coco.getImgIds())):
        try:
            record = COCOImageRecord(
                int(image["id"]), str(image["file_name"]), int(image["height"]), int(image["width"])
            )
        except (KeyError, TypeError, ValueError, OverflowError) as error:  # Overflow: an Infinity
            raise InvalidData(
                f"{path}: image {image.get('id')} is malformed ({error!r}); "
                "expected id, file_name, height, width"
            ) from error
        if not (1 <= record.height <= MAX_IMAGE_SIDE and 1 <= record.width <= MAX_IMAGE_SIDE):
            raise InvalidData(
                f"{path}: image {record.image_id} has height {record.height} and width {record.width}; "
                f"expected 1 to {MAX_IMAGE_SIDE} pixels each"
            )
        for annotation in coco.imgToAnns[record.image_id]:
            record.instances.append(coco_instance(annotation, mapping, path))
        records.append(record)
    check_file_names([(record.image_id, record.file_name) for record in records], path)
    return records


def check_file_names(images: Sequence[tuple[int, str]], source: str | os.PathLike) -> None:
    """Raise ``InvalidData`` naming ``source`` and the image where a ``file_name`` is not a relative path
    inside the image folder, or its stem (the image id: masks, CAMs and outputs are named from it) is not a
    plain file name or is another image's too.

    Args:
        images: (COCO image id, file_name) of every image.
        source: the annotation (or mask index) file named in messages.
    """
    first_of_stem: dict[str, int] = {}
    for image_id, file_name in images:
        stem = Path(file_name).stem
        problem = relative_path_problem(file_name) or unsafe_name_reason(stem)
        if problem:
            raise InvalidData(
                f"{source}: image {image_id} file_name {file_name!r} {problem}; expected a relative path "
                "inside the image folder"
            )
        other = first_of_stem.setdefault(stem, image_id)
        if other != image_id:
            raise InvalidData(
                f"{source}: images {other} and {image_id} share the file name stem {stem!r}; expected "
                "distinct stems (each names the image's mask and outputs)"
            )


def coco_instance(annotation: dict, mapping: dict[int, int], source: Path) -> COCOInstance:
    """What mask rendering needs of one annotation (its category as a mask value 1..80)."""
    try:
        category_id = int(annotation["category_id"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidData(
            f"{source}: annotation {annotation.get('id')} is malformed ({error!r}); expected a category_id"
        ) from error
    if category_id not in mapping:
        raise InvalidData(
            f"{source}: annotation {annotation.get('id')} has category id {category_id}, "
            f"not a COCO category (known ids: 1..90 without {sorted(set(range(1, 91)) - set(mapping))})"
        )
    return COCOInstance(
        annotation_id=int(annotation.get("id", -1)),
        class_value=mapping[category_id],
        segmentation=annotation.get("segmentation", []),
        iscrowd=bool(annotation.get("iscrowd", 0)),
        area=float(annotation.get("area", 0.0)),
    )

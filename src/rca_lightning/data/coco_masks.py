"""The COCO mask cache: each image's semantic mask rendered once from its annotations (the rendering rules
of :mod:`rca_lightning.data.coco`), one palette PNG per image under ``<cache>/<split>/``, and ``index.json``
(image list, sizes, image-level labels) written last: its presence with a matching signature means the split
is complete. Launched by torchrun or srun, the processes share the rendering.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from rca_lightning.data.coco import (
    COCO_CLASS_NAMES,
    COCOImageRecord,
    annotation_file,
    check_coco_layout,
    read_coco_instances,
)
from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.imaging.palette_png import write_palette_png
from rca_lightning.utils.atomic import path_inside, write_json_atomically
from rca_lightning.utils.errors import InvalidData
from rca_lightning.utils.ranks import Ranks

log = logging.getLogger(__name__)

MASK_CACHE_FOLDER = "SegmentationClassCOCO"
INDEX_FILE = "index.json"
BUILDER_VERSION = 2  # 2: keyed by the annotation file's content (sha256), not its path and size


def instance_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """Binary (H, W) uint8 mask of a polygon list, an uncompressed RLE or a compressed RLE."""
    if isinstance(segmentation, list):  # polygons: flat [x1, y1, x2, y2, ...] lists
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        if not polygons:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
    else:
        raise InvalidData(f"segmentation of type {type(segmentation).__name__}: expected polygons or RLE")
    if tuple(rle["size"]) != (height, width):
        raise InvalidData(f"RLE size {tuple(rle['size'])} differs from the image size {(height, width)}")
    return mask_utils.decode(rle)


def render_semantic_mask(record: COCOImageRecord, source: str = "") -> np.ndarray:
    """(H, W) uint8 semantic mask of one image: 0 background, 1..80 classes, 255 crowd.

    Args:
        record: the image and its instances.
        source: the annotation file, for error messages.
    """
    mask = np.zeros((record.height, record.width), np.uint8)
    crowds = [instance for instance in record.instances if instance.iscrowd]
    singles = sorted((i for i in record.instances if not i.iscrowd), key=lambda i: -i.area)
    for instance in crowds + singles:  # a handful per image
        try:
            pixels = instance_mask(instance.segmentation, record.height, record.width).astype(bool)
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidData(
                f"{source}: annotation {instance.annotation_id} of image {record.file_name}: {error}"
            ) from error
        mask[pixels] = IGNORE_INDEX if instance.iscrowd else instance.class_value
    return mask


def _write_mask(task: tuple[COCOImageRecord, str, str]) -> None:
    """Render and write one mask atomically (a worker-process entry point)."""
    record, output_path, source = task
    write_palette_png(output_path, render_semantic_mask(record, source))


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (an instances JSON is hundreds of MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def split_cache_dir(root: str | os.PathLike, split: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the cached masks and ``index.json`` of ``split``."""
    base = Path(cache_dir) if cache_dir is not None else Path(root) / MASK_CACHE_FOLDER
    return base / split


def build_coco_masks(
    root: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    include_unannotated: bool = False,
    ranks: Ranks | None = None,
) -> Path:
    """Render the semantic masks and label index of a split once; later calls return at once.

    Masks already on disk are kept (each is written atomically, so an existing file is complete), so
    an interrupted build resumes; an annotation file of other content (its sha256) or another setting
    rebuilds every mask. A split without any annotation raises ``InvalidData``: it would train or score
    nothing.

    Args:
        root: the COCO folder.
        split: ``train2014`` or ``val2014`` (image folder and ``instances_<split>.json``).
        cache_dir: where ``<split>/`` goes (default ``root/SegmentationClassCOCO``).
        num_workers: processes rendering masks (default: all CPUs; 0 or 1: in this process).
        include_unannotated: keep images that have no annotation (zero labels, background mask).
        ranks: the processes sharing the work (:func:`~rca_lightning.utils.ranks.stage_ranks`; every one
            calls this): each renders its share of the masks, the first writes the index.

    Returns:
        The split's cache folder (masks and ``index.json``).
    """
    source = annotation_file(root, split)
    check_coco_layout(root, [split])
    output = split_cache_dir(root, split, cache_dir)
    signature = {
        "version": BUILDER_VERSION,
        "annotation_sha256": content_sha256(source),
        "include_unannotated": include_unannotated,
    }
    index_path = output / INDEX_FILE
    previous = read_mask_index(index_path) if index_path.is_file() else None
    if previous is not None and previous.get("signature") == signature:
        return output
    records = read_coco_instances(source)
    if not any(record.instances for record in records):
        raise InvalidData(
            f"{source}: 'annotations' is empty; expected at least one annotated image in split {split!r}"
        )
    if not include_unannotated:
        records = [record for record in records if record.instances]
    ranks = ranks or Ranks()
    output.mkdir(parents=True, exist_ok=True)
    rebuild = previous is not None  # an index for other annotations or settings: every mask is stale
    mask_files = [path_inside(output, f"{record.stem}.png") for record in records]
    tasks = [
        (record, str(mask_file), str(source))
        for record, mask_file in zip(records, mask_files, strict=True)
        if rebuild or not mask_file.is_file()
    ]
    ranks.barrier()  # every rank listed the same masks before any is written
    tasks = ranks.shard(tasks)
    workers = ranks.cpus() if num_workers is None else num_workers
    log.info("Writing %d COCO %s masks to %s with %d processes", len(tasks), split, output, max(1, workers))
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            _write_mask(task)
    else:
        # fork where available: workers start at once without re-importing the package.
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for _ in pool.map(_write_mask, tasks, chunksize=max(1, len(tasks) // (8 * workers))):
                pass
    ranks.barrier()  # every mask is written before the index says the split is built
    if ranks.is_main:
        _write_index(index_path, signature, records)
    ranks.barrier()
    return output


def _write_index(index_path: Path, signature: dict, records: list[COCOImageRecord]) -> None:
    write_json_atomically(
        index_path,
        {
            "signature": signature,
            "class_names": list(COCO_CLASS_NAMES),
            "images": [
                {
                    "id": record.image_id,
                    "file_name": record.file_name,
                    "height": record.height,
                    "width": record.width,
                    "classes": record.class_values,
                }
                for record in records
            ],
        },
    )


def read_mask_index(path: Path) -> dict | None:
    """The ``index.json`` of a split's mask cache, or None where it cannot be read (then it is rebuilt)."""
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # unreadable index: rebuild
    return index if isinstance(index, dict) else None

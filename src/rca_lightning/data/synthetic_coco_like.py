"""A COCO-2014-shaped set at COCO's real sizes, drawn by the built-in renderer: the 80 COCO categories with
their real (sparse, 1..90) ids, images of about 640 x 480, the layout that ``data=coco`` reads.

Output (``root`` is ``data.root``)::

    root/train2014/COCO_train2014_<12 digits>.jpg    JPEG quality 90, sizes drawn from COCO_IMAGE_SIZES
    root/val2014/COCO_val2014_<12 digits>.jpg
    root/annotations/instances_{train,val}2014.json  images, annotations, categories (COCO's format)
    root/SaliencyImages/<file stem>.png              train2014 saliency maps (grey PNG, data.saliency_dir)
    root/.coco_like_complete.json                    settings and summary; written last

Every visible object is one annotation (``iscrowd`` 0) whose ``segmentation`` is the compressed RLE of its
visible pixels (pycocotools' ``encode``), with its ``area`` and ``bbox``: the semantic masks the mask cache
renders from the JSON (:mod:`~rca_lightning.data.coco_masks`) are exactly the drawn ones, without VOC's border
band. Image ids are odd in train2014 (``2 i + 1``) and even in val2014 (``2 i + 2``), so no id is in both;
annotation ids run over both files. Written resumably over worker processes
(:mod:`~rca_lightning.data.synthetic_real_size`); deterministic from the seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from rca_lightning.data import synthetic_saliency as saliency
from rca_lightning.data.coco import COCO_CATEGORIES, COCO_CLASS_NAMES, annotation_file
from rca_lightning.data.synthetic import jpeg_bytes
from rca_lightning.data.synthetic_chunked_writer import Chunk
from rca_lightning.data.synthetic_real_size import JPEG_QUALITY, GeneratedDataset, RealSizeGenerator
from rca_lightning.data.synthetic_renderer import RenderedImage

# (height, width, share): the commonest COCO 2014 image sizes, landscape 640 x 480 most of all.
COCO_IMAGE_SIZES = ((480, 640, 0.5), (427, 640, 0.2), (640, 480, 0.15), (424, 640, 0.1), (640, 427, 0.05))


class COCOLikeGenerator(RealSizeGenerator):
    """Writes the COCO-shaped set (module docstring).

    Args:
        num_train: images in train2014 (COCO: 82,783, of which 82,081 annotated; here every image is).
        num_val: images in val2014 (COCO: 40,504).
        seed: every byte written is a function of the settings.
        max_objects: each image shows 1..max_objects objects (COCO averages about 7; objects that cannot be
            placed visibly are left out, so fewer show).
    """

    name, version, marker_name = "coco_like", 1, ".coco_like_complete.json"
    class_names = COCO_CLASS_NAMES
    train_split, val_split = "train2014", "val2014"
    image_sizes = COCO_IMAGE_SIZES
    stream = 2_014

    def __init__(self, num_train: int = 82_783, num_val: int = 40_504, seed: int = 0, max_objects: int = 8):
        super().__init__(num_train, num_val, seed, max_objects)

    def image_id(self, split: str, index: int) -> int:
        """The COCO id of image ``index`` of ``split`` (odd in train2014, even in val2014)."""
        return 2 * index + (1 if split == self.train_split else 2)

    def file_name(self, split: str, index: int) -> str:
        """``COCO_<split>_<12-digit id>.jpg``."""
        return f"COCO_{split}_{self.image_id(split, index):012d}.jpg"

    def semantic_mask(self, split: str, index: int) -> np.ndarray:
        """(H, W) uint8 mask of image ``index`` of ``split`` as drawn: 0 background, 1..80 in
        ``COCO_CLASS_NAMES`` order, no border band."""
        rendered = self.render_image(split, index)
        lookup = np.array([0] + [class_index + 1 for class_index, _, _ in rendered.objects], np.uint8)
        return lookup[rendered.instance_map]

    def prepare(self, folder: Path) -> None:
        """Make the folders the chunks write into."""
        for sub in (self.train_split, self.val_split, "annotations", saliency.SALIENCY_FOLDER):
            (folder / sub).mkdir(exist_ok=True)

    def write_chunk(self, folder: Path, chunk: Chunk) -> list[dict]:
        """Draw and write the chunk's images and (train2014) saliency maps; the records hold their JSON."""
        records = []
        for index in range(chunk.start, chunk.stop):
            file_name = self.file_name(chunk.split, index)
            rendered = self.render_image(chunk.split, index)
            (folder / chunk.split / file_name).write_bytes(jpeg_bytes(rendered.image, JPEG_QUALITY))
            height, width = rendered.instance_map.shape
            overlap = None
            if chunk.split == self.train_split:
                stem = Path(file_name).stem
                png, overlap = saliency.smooth_saliency_png(rendered.object_mask, self.seed, stem)
                (folder / saliency.SALIENCY_FOLDER / f"{stem}.png").write_bytes(png)
            image = {"id": self.image_id(chunk.split, index), "file_name": file_name}
            records.append(
                {
                    "image": {**image, "height": height, "width": width},
                    "annotations": self._annotations(rendered),
                    "saliency_overlap": overlap,
                }
            )
        return records

    @staticmethod
    def _annotations(rendered: RenderedImage) -> list[dict]:
        """One annotation per visible object (no ``id`` and ``image_id`` yet: ``finish`` numbers them)."""
        annotations = []
        for instance, (class_index, _, _) in enumerate(rendered.objects, start=1):
            region = np.asfortranarray(rendered.instance_map == instance, dtype=np.uint8)  # (H, W)
            rle = mask_utils.encode(region)
            annotations.append(
                {
                    "category_id": COCO_CATEGORIES[class_index][0],
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(value) for value in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
        return annotations

    def finish(self, folder: Path, records: dict[str, list[dict]]) -> dict:
        """Write the instances JSONs (annotation ids numbered over both); the summary: images per split,
        annotations, saliency IoU."""
        categories = [
            {"id": category_id, "name": name, "supercategory": "synthetic"}
            for category_id, name in COCO_CATEGORIES
        ]
        next_annotation = 1
        for split, split_records in records.items():
            annotations = []
            for record in split_records:
                for annotation in record["annotations"]:
                    annotations.append(
                        {"id": next_annotation, "image_id": record["image"]["id"], **annotation}
                    )
                    next_annotation += 1
            content = {
                "info": {
                    "description": "rca-lightning COCO-shaped synthetic set",
                    "version": str(self.version),
                },
                "licenses": [],
                "images": [record["image"] for record in split_records],
                "annotations": annotations,
                "categories": categories,
            }
            annotation_file(folder, split).write_text(json.dumps(content, separators=(",", ":")))
        return {
            "images": {split: len(split_records) for split, split_records in records.items()},
            "annotations": next_annotation - 1,
            "saliency_foreground_iou": saliency.foreground_iou(
                [record["saliency_overlap"] for record in records[self.train_split]]
            ),
        }


def generate_coco_like(
    root: str | os.PathLike,
    num_train: int = 82_783,
    num_val: int = 40_504,
    seed: int = 0,
    workers: int | None = None,
    max_objects: int = 8,
) -> GeneratedDataset:
    """Write (or find complete) the COCO-shaped set of ``num_train`` train2014 and ``num_val`` val2014 images.

    Returns:
        Its root, splits and saliency folder: ``data=coco data.root=<root> data.saliency_dir=<saliency_dir>``
        reads it.
    """
    return COCOLikeGenerator(num_train, num_val, seed, max_objects).generate(root, workers)

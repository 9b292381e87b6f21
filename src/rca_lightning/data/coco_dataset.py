"""The COCO 2014 split reader: images, 80-class labels and the semantic masks ``build_coco_masks`` cached."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rca_lightning.data.coco import COCO_CLASS_NAMES, annotation_file, check_file_names
from rca_lightning.data.coco_masks import INDEX_FILE, read_mask_index, split_cache_dir
from rca_lightning.data.saliency import check_saliency_maps
from rca_lightning.data.transforms import build_eval_transform
from rca_lightning.data.voc_dataset import Transform, VOCSegmentationDataset
from rca_lightning.utils.errors import InvalidSetting, MissingInput


class COCOSegmentationDataset(VOCSegmentationDataset):
    """Images, 80-class labels and cached semantic masks of a COCO 2014 split.

    Reads the split's ``index.json`` written by ``build_coco_masks`` (run it first, e.g. through
    ``COCODataModule.prepare_data``). Item loading (image decoding, mask checks, transform, item dict)
    is ``VOCSegmentationDataset``'s; only the discovery of images, masks and labels differs.

    Args:
        root: the COCO folder.
        split: ``train2014`` or ``val2014``.
        transform: albumentations-style callable; None normalises and keeps the size.
        cache_dir: the ``cache_dir`` given to ``build_coco_masks`` (default ``root/SegmentationClassCOCO``).
        class_names: must be ``COCO_CLASS_NAMES`` (kept as an argument for the shared datamodule).
        saliency_dir: folder of saliency maps ``<image_id>.png``, or None to read none.

    Items are dicts: ``image`` float32 (3, H, W), ``labels`` float32 (80,), ``mask`` int64 (H, W) with
    values 0..80 and 255, ``image_id`` str (the file stem, e.g. ``COCO_val2014_000000000042``), and the
    other keys of ``VOCSegmentationDataset`` (``saliency`` with a ``saliency_dir``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Transform | None = None,
        cache_dir: str | os.PathLike | None = None,
        class_names: Sequence[str] = COCO_CLASS_NAMES,
        saliency_dir: str | os.PathLike | None = None,
    ) -> None:
        # No super().__init__(): it discovers a VOC split list; everything it sets is set here.
        if tuple(class_names) != COCO_CLASS_NAMES:
            raise InvalidSetting(
                "data.class_names: expected the 80 COCO class names in category-id order (COCO_CLASS_NAMES)"
            )
        self.root = Path(root)
        self.split = split
        self.class_names = COCO_CLASS_NAMES
        self._class_index = {name: i for i, name in enumerate(self.class_names)}
        self.transform = transform if transform is not None else build_eval_transform(None)
        self.mask_root = split_cache_dir(root, split, cache_dir)
        self.mask_dir = str(self.mask_root)
        index_path = self.mask_root / INDEX_FILE
        index = read_mask_index(index_path) if index_path.is_file() else None
        if index is None:
            raise MissingInput(
                f"{index_path} not found: the {split} masks are not built yet (run the datamodule's "
                "prepare_data or rca_lightning.data.coco_masks.build_coco_masks)"
            )
        images = index["images"]
        check_file_names([(image["id"], image["file_name"]) for image in images], index_path)
        self.image_ids = [Path(image["file_name"]).stem for image in images]
        self._file_names = {Path(name).stem: name for name in (image["file_name"] for image in images)}
        self.labels = np.zeros((len(images), self.num_classes), np.float32)  # (N, 80)
        for row, image in enumerate(images):
            self.labels[row, np.asarray(image["classes"], np.int64) - 1] = 1.0
        missing = [image_id for image_id in self.image_ids if not self.image_path(image_id).is_file()]
        if missing:
            raise MissingInput(
                f"{len(missing)} of {len(self.image_ids)} images of {annotation_file(root, split)} "
                f"are missing, first: {self.image_path(missing[0])}"
            )
        self.saliency_dir = None if saliency_dir is None else Path(saliency_dir)
        if self.saliency_dir is not None:
            check_saliency_maps(self.saliency_dir, self.image_ids, annotation_file(root, split))

    def image_path(self, image_id: str) -> Path:
        return self.root / self.split / self._file_names.get(image_id, f"{image_id}.jpg")

    def mask_path(self, image_id: str) -> Path:
        return self.mask_root / f"{image_id}.png"

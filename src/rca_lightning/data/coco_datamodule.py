"""LightningDataModule over COCO 2014: masks built once in ``prepare_data``, loaders shared with VOC."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rca_lightning.data.coco import COCO_CLASS_NAMES, annotation_file, check_coco_layout
from rca_lightning.data.coco_dataset import COCOSegmentationDataset
from rca_lightning.data.coco_masks import MASK_CACHE_FOLDER, build_coco_masks
from rca_lightning.data.datamodule import VOCDataModule
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.ranks import Ranks


class COCODataModule(VOCDataModule):
    """Train / val / predict loaders of COCO 2014 (80 classes + background).

    ``prepare_data`` (rank zero) checks the layout, renders each split's semantic masks and label index
    once, in ``mask_workers`` processes (see ``rca_lightning.data.coco_masks``), and validates every image and
    mask (``validate``, as ``VOCDataModule``; the labels are not compared with the masks: both come from
    the same annotations, and a crowd-only image is labelled with a void mask); ``setup`` (every rank)
    reads the cached index. Transforms, loaders and batches are ``VOCDataModule``'s.

    Args:
        root: folder holding ``train2014/``, ``val2014/`` and ``annotations/``.
        class_names: the 80 COCO names in category-id order (the default; kept for the shared configs).
        train_split: image folder / annotation split used for training.
        val_split: split used for validation (and prediction by default).
        mask_cache_dir: where rendered masks go (default ``root/SegmentationClassCOCO``).
        mask_workers: processes rendering masks (None: all CPUs).
        include_unannotated: keep images without any annotation (zero labels, background mask).
        **loader_settings: ``VOCDataModule``'s ``image_size``, ``batch_size``, ``num_workers``,
            ``scale_range``, ``crop``, ``hflip``, ``color_jitter``, ``pin_memory``, ``validate``,
            ``saliency_dir`` (maps named by file stem, ``<saliency_dir>/COCO_train2014_<id>.png``),
            ``train_masks_dir`` (``<file stem>.png``), ``eval_resize``, ``val_batch_size``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        class_names: Sequence[str] = COCO_CLASS_NAMES,
        train_split: str = "train2014",
        val_split: str = "val2014",
        mask_cache_dir: str | os.PathLike | None = None,
        mask_workers: int | None = None,
        include_unannotated: bool = False,
        **loader_settings,
    ) -> None:
        if tuple(class_names) != COCO_CLASS_NAMES:
            raise InvalidSetting(
                f"data.class_names: got {len(class_names)} names starting {list(class_names)[:3]}; "
                "expected the 80 COCO names in category-id order (rca_lightning.data.coco.COCO_CLASS_NAMES)"
            )
        super().__init__(root, class_names, train_split=train_split, val_split=val_split, **loader_settings)
        self.mask_cache_dir = Path(mask_cache_dir) if mask_cache_dir is not None else None
        self.mask_workers = mask_workers
        self.include_unannotated = include_unannotated

    def prepare_data(self) -> None:
        """Check the layout, build the masks and label index of the train and val splits once, then
        validate both splits."""
        self.check_train_masks_dir()
        self.prepare_over_ranks(Ranks())
        self.validate_splits()

    def prepare_over_ranks(self, ranks: Ranks) -> None:
        """Check the layout and build the masks and label index of the train and val splits once, each
        process rendering its share of the masks."""
        splits = list(dict.fromkeys((self.train_split, self.val_split)))
        check_coco_layout(self.root, splits)
        for split in splits:
            build_coco_masks(
                self.root,
                split,
                cache_dir=self.mask_cache_dir,
                num_workers=self.mask_workers,
                include_unannotated=self.include_unannotated,
                ranks=ranks,
            )

    def split_source(self, split: str) -> Path:
        return annotation_file(self.root, split)

    def labels_checked_against_masks(self, split: str) -> bool:
        """Never: the masks come from the same annotations as the labels (``train_masks_dir``'s need not
        agree with them)."""
        return False

    def validation_cache_dir(self) -> Path:
        """The mask cache's folder (writable where the masks could be written)."""
        return self.mask_cache_dir if self.mask_cache_dir is not None else self.root / MASK_CACHE_FOLDER

    def _check_root(self) -> None:
        check_coco_layout(self.root, list(dict.fromkeys((self.train_split, self.val_split))))

    def make_dataset(
        self, split: str, train: bool = False, ground_truth: bool = False
    ) -> COCOSegmentationDataset:
        """A dataset of ``split`` with the training or the evaluation transform; with ``ground_truth`` its
        true masks even where ``train_masks_dir`` replaces them for training."""
        transform = self.train_transform if train else self.eval_transform
        dataset = COCOSegmentationDataset(
            self.root,
            split,
            transform=transform,
            cache_dir=self.mask_cache_dir,
            saliency_dir=self.saliency_folder(split),
        )
        if split == self.train_split and self.train_masks_dir is not None and not ground_truth:
            # The labels and image ids stay those of the annotations.
            dataset.mask_root = self.train_masks_dir
            dataset.mask_dir = str(self.train_masks_dir)
        return dataset

"""LightningDataModule of the segmentation stage: train on a pseudo-mask folder, score on ground truth."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch.utils.data import DataLoader

from rca_lightning.data.coco_datamodule import COCODataModule
from rca_lightning.data.coco_dataset import COCOSegmentationDataset
from rca_lightning.data.datamodule import VOCDataModule
from rca_lightning.data.transforms import build_eval_transform
from rca_lightning.utils.errors import InvalidSetting, MissingInput


class PseudoMaskTraining:
    """What the segmentation stage's datamodules add to a dataset's own: training masks from a pseudo-mask
    folder, evaluation at the original resolution, evaluation loaders over the validation split.

    Mixed in before a ``VOCDataModule``-like class (``PseudoMaskDataModule``, ``COCOPseudoMaskDataModule``);
    the keyword-only arguments are its own, the rest go to that class.

    Args:
        pseudo_masks_dir: folder of the training masks ``<id>.png`` (palette or grey PNGs, 0 background,
            1..C classes, 255 ignored); a relative path is taken from the working directory.
        eval_image_size: squash-resize evaluation images and masks to this side, or None (original size).
        val_batch_size: images per validation / test / predict batch (1 for mixed image sizes).
    """

    def __init__(
        self,
        *args,
        pseudo_masks_dir: str | os.PathLike,
        eval_image_size: int | None = None,
        val_batch_size: int = 1,
        **settings,
    ) -> None:
        if pseudo_masks_dir is None or str(pseudo_masks_dir) in ("", "???"):
            raise InvalidSetting("pseudo_masks_dir: expected the folder of pseudo-mask PNGs, got nothing")
        if val_batch_size < 1:
            raise InvalidSetting(f"data.val_batch_size={val_batch_size!r}: expected a positive integer")
        self.pseudo_masks_dir = Path(pseudo_masks_dir).expanduser().absolute()
        super().__init__(*args, **settings)
        self.eval_image_size = eval_image_size
        self.val_batch_size = val_batch_size
        self.eval_transform = build_eval_transform(eval_image_size, setting="data.eval_image_size")

    def prepare_data(self) -> None:
        """Check that the pseudo-mask folder exists, then the dataset's own ``prepare_data``."""
        if getattr(self, "generator", None) is None and not self.pseudo_masks_dir.is_dir():
            raise MissingInput(
                f"pseudo_masks_dir {self.pseudo_masks_dir} does not exist "
                "(expected a folder of <image id>.png masks)"
            )
        super().prepare_data()

    def labels_checked_against_masks(self, split: str) -> bool:
        """Pseudo masks (the train split's) may miss a labelled class; the ground truth may not."""
        return split != self.train_split and super().labels_checked_against_masks(split)

    def _eval_loader(self, split: str | None) -> DataLoader:
        if split is None or split == self.val_split:
            if self.val_dataset is None:
                self.setup("validate")
            dataset = self.val_dataset
        else:
            dataset = self.make_dataset(split, train=False)
        return DataLoader(
            dataset,
            batch_size=self.val_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(None)

    def test_dataloader(self) -> DataLoader:
        """The validation split again: the evaluation path (test-time augmentation, CRF) scores it."""
        return self._eval_loader(None)

    def predict_dataloader(self, split: str | None = None) -> DataLoader:
        """Loader over ``split`` (default: the validation split) with the evaluation transform."""
        return self._eval_loader(split)


class PseudoMaskDataModule(PseudoMaskTraining, VOCDataModule):
    """A VOC-layout dataset (real VOC or the built-in one) whose training split reads pseudo masks.

    Training images come from ``root/JPEGImages`` and their masks from ``pseudo_masks_dir/<id>.png``; the
    training transform is ``VOCDataModule``'s random scale + pad (mask 255) + crop to ``image_size`` + flip.
    Validation and test (the same split, ``val_split``) read the ground-truth masks.

    Args:
        root: the VOC2012 folder.
        class_names: foreground classes in mask-value order.
        pseudo_masks_dir, eval_image_size, val_batch_size: see ``PseudoMaskTraining``.
        mask_dirs: split -> ground-truth mask folder (as in ``VOCDataModule``); the train split's entry
            is replaced by ``pseudo_masks_dir``.
        **loader_settings: the other ``VOCDataModule`` arguments (``train_split``, ``val_split``,
            ``image_size`` = crop size, ``batch_size``, ``num_workers``, ``scale_range``, ``crop``,
            ``hflip``, ``color_jitter``, ``generator``, ``pin_memory``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        class_names: list[str],
        pseudo_masks_dir: str | os.PathLike,
        eval_image_size: int | None = None,
        val_batch_size: int = 1,
        mask_dirs: Mapping[str, str] | None = None,
        **loader_settings,
    ) -> None:
        train_split = loader_settings.get("train_split", "train")
        # An absolute folder replaces root/<mask_dir> (pathlib joins keep an absolute right-hand side).
        pseudo_dir = str(Path(pseudo_masks_dir or "").expanduser().absolute())
        super().__init__(
            root,
            class_names,
            pseudo_masks_dir=pseudo_masks_dir,
            eval_image_size=eval_image_size,
            val_batch_size=val_batch_size,
            mask_dirs={**(mask_dirs or {}), train_split: pseudo_dir},
            **loader_settings,
        )


class COCOPseudoMaskDataModule(PseudoMaskTraining, COCODataModule):
    """COCO 2014 whose training split reads pseudo masks; val keeps the masks rendered from the annotations.

    Args:
        root: folder holding ``train2014/``, ``val2014/`` and ``annotations/``.
        pseudo_masks_dir, eval_image_size, val_batch_size: see ``PseudoMaskTraining``.
        **settings: ``COCODataModule``'s other arguments.
    """

    def make_dataset(self, split: str, train: bool = False) -> COCOSegmentationDataset:
        dataset = super().make_dataset(split, train)
        if split == self.train_split:
            dataset.mask_root = self.pseudo_masks_dir
        return dataset

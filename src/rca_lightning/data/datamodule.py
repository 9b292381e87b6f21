"""LightningDataModule over a VOC-layout folder, generating the synthetic set when asked."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from rca_lightning.data.file_checks import ImageFiles
from rca_lightning.data.rank_share_sampler import RankShareSampler
from rca_lightning.data.saliency import SALIENCY_SETTING
from rca_lightning.data.split_validation import (
    ValidationReport,
    cache_file_for,
    check_validate_mode,
    validate_split,
)
from rca_lightning.data.transforms import build_eval_transform, build_train_transform
from rca_lightning.data.voc_dataset import VOCSegmentationDataset
from rca_lightning.data.voc_layout import (
    CLASS_NAMES_FILE,
    DEFAULT_MASK_DIR,
    check_voc_layout,
    split_file_path,
)
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from rca_lightning.utils.ranks import Ranks


class DatasetGenerator(Protocol):
    """What writes a dataset into ``data.root`` on first use (``data.generator``, built by Hydra)."""

    class_names: Sequence[str]

    def is_complete(self, root: str | os.PathLike) -> bool:
        """Whether ``root`` holds this generator's finished dataset."""

    def generate(self, root: str | os.PathLike) -> None:
        """Write the dataset under ``root`` unless it is already complete."""


class VOCDataModule(LightningDataModule):
    """Train / val / predict loaders of a PASCAL-VOC-layout dataset.

    ``prepare_data`` (rank zero) generates the synthetic dataset when a generator is given and
    the folder is not complete, then checks the layout (split lists, images and masks of the train
    and val splits, naming everything missing) and validates the files of both splits
    (``rca_lightning.data.split_validation``); ``setup`` (every rank) builds datasets.

    Exact resume: the train loader is a ``StatefulDataLoader`` whose sampler shuffles by (seed, epoch)
    (``StatefulDistributedSampler``, also with one process; the seed is ``seed_everything``'s, as for
    Lightning's own distributed sampler, and Lightning sets the epoch), or with ``shuffle=False`` takes the
    split's order every epoch. A resumed run therefore sees the same images in the same order as an
    uninterrupted one, and a checkpoint saved mid-epoch carries the sampler's position, so the run continues
    with the batches it had not seen. The train workers start
    anew every epoch (not persistent): their seeds come from the main process's generator, which
    ``RNGStateCallback`` restores, so augmentations after a resume repeat too. Under DDP the val loader
    splits the images over the ranks without repeating any (Lightning's default sampler pads ranks with
    repeated images, which the metrics would count twice).

    Saliency maps (EPS, RCA on EPS) are read only after ``require_saliency()``: then every dataset of the
    train split gives ``saliency`` float32 (H, W) in [0, 1] per item, moved with the image by the training
    transform (batches: (B, image_size, image_size)); ``prepare_data`` checks that each train image has a
    map and, with ``validate``, that it decodes. Other splits and runs that never call it read no maps.

    Args:
        root: the VOC2012 folder.
        class_names: foreground classes in mask-value order.
        train_split: ``ImageSets/Segmentation/<train_split>.txt`` used for training.
        val_split: split used for validation (and prediction by default).
        image_size: side of training crops and of evaluation resizes.
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
        scale_range: random scale range of the training crop.
        crop: random scale + crop (True) or squash-resize like the public code (False).
        hflip: random horizontal flips in training.
        color_jitter: (brightness, contrast, saturation, hue) or None.
        generator: writes a generated dataset to ``root`` when it is not there yet (``data.generator``:
            the built-in dataset's ``SyntheticVOCGenerator``, or any :class:`DatasetGenerator`).
        pin_memory: DataLoader ``pin_memory``.
        mask_dirs: split -> mask folder for splits whose masks are not in ``SegmentationClass``
            (VOC + SBD: ``{"train_aug": "SegmentationClassAug"}``); an absolute path is used as is.
        validate: how much of the train and val splits ``prepare_data`` decodes and checks: ``full``
            (every image id), ``quick`` (a fixed sample) or ``off``.
        saliency_dir: folder of saliency maps ``<image_id>.png`` (grey or RGB, any size), read only after
            ``require_saliency()``; a relative path is taken from the working directory, as ``root`` is.
        train_masks_dir: folder of the train split's masks ``<image_id>.png`` when they are not the
            dataset's own (the segmentation stage's pseudo masks: palette or grey PNGs, 0 background, 1..C
            classes, 255 ignored; they need not agree with the image tags); a relative path is taken from
            the working directory. Evaluation splits keep their ground truth.
        eval_resize: squash evaluation images and masks to ``image_size`` (batches of one size), or keep
            each at its own size (exact masks; ``val_batch_size`` 1 when sizes differ).
        val_batch_size: images per validation / test / predict batch (None: ``batch_size``).
        shuffle: a new order of the train split every epoch, by (seed, epoch); False: the split file's order
            every epoch (the public code's loader, whose attention store, keyed by a batch counter, needed it;
            the store here is keyed by image id, so shuffling costs nothing).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        class_names: Sequence[str],
        train_split: str = "train",
        val_split: str = "val",
        image_size: int = 160,
        batch_size: int = 16,
        num_workers: int = 0,
        scale_range: tuple[float, float] = (0.7, 1.3),
        crop: bool = True,
        hflip: bool = True,
        color_jitter: Sequence[float] | None = (0.3, 0.3, 0.3, 0.1),
        generator: DatasetGenerator | None = None,
        pin_memory: bool = False,
        mask_dirs: Mapping[str, str] | None = None,
        validate: str = "full",
        saliency_dir: str | os.PathLike | None = None,
        train_masks_dir: str | os.PathLike | None = None,
        eval_resize: bool = True,
        val_batch_size: int | None = None,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise InvalidSetting(
                "data.class_names: expected at least one foreground class, got an empty list"
            )
        if generator is not None and tuple(generator.class_names) != self.class_names:
            raise InvalidSetting(
                f"data.generator.class_names {list(generator.class_names)} differ from data.class_names "
                f"{list(self.class_names)}; expected the same names in the same order"
            )
        if batch_size < 1:
            raise InvalidSetting(f"data.batch_size={batch_size!r}: expected a positive integer")
        if val_batch_size is not None and val_batch_size < 1:
            raise InvalidSetting(f"data.val_batch_size={val_batch_size!r}: expected a positive integer")
        if not isinstance(shuffle, bool):
            raise InvalidSetting(f"data.shuffle={shuffle!r}: expected true or false")
        self.shuffle = shuffle
        self.validate = check_validate_mode(validate)
        self.train_split = train_split
        self.val_split = val_split
        self.image_size = image_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.generator = generator
        self.pin_memory = pin_memory
        self.mask_dirs = dict(mask_dirs or {})
        self.saliency_dir = None if saliency_dir in (None, "") else Path(saliency_dir).expanduser().absolute()
        self.train_masks_dir = (
            None if train_masks_dir in (None, "") else Path(train_masks_dir).expanduser().absolute()
        )
        self.load_saliency = False
        self._files_checked = False  # validate_splits ran in this process (prepare_data, rank zero)
        self.train_transform = build_train_transform(
            image_size, scale_range=tuple(scale_range), crop=crop, hflip=hflip, color_jitter=color_jitter
        )
        self.eval_transform = build_eval_transform(image_size if eval_resize else None)
        self.train_dataset: VOCSegmentationDataset | None = None
        self.val_dataset: VOCSegmentationDataset | None = None

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C."""
        return len(self.class_names)

    def require_saliency(self) -> None:
        """Read saliency maps from ``saliency_dir`` for the train split (methods trained with them call this).

        Best called before the trainer's ``prepare_data``, which then checks the maps. A later call (e.g.
        from the module's ``setup``) drops a train dataset built without maps, so the train loader rebuilds
        it with them, and, where ``prepare_data`` already ran in this process, checks the maps at once.

        Raises:
            InvalidSetting: no ``saliency_dir`` is set.
        """
        if self.saliency_dir is None:
            raise InvalidSetting(
                f"{SALIENCY_SETTING}: expected a folder of grey <image_id>.png saliency maps "
                "(the model trains with saliency), got null"
            )
        if self.load_saliency:
            return
        self.load_saliency = True
        self.train_dataset = None
        if self._files_checked:
            self.validate_splits()

    def saliency_folder(self, split: str) -> Path | None:
        """The saliency maps of ``split``: ``saliency_dir`` for the train split once required, else None."""
        return self.saliency_dir if self.load_saliency and split == self.train_split else None

    def prepare_over_ranks(self, ranks: Ranks) -> None:
        """Preparation every launched process shares before a trainer starts (called by the console
        scripts under :func:`~rca_lightning.utils.ranks.stage_ranks`); ``prepare_data`` then finds it done.
        Nothing here: VOC's files need no building (COCO renders its masks)."""

    def prepare_data(self) -> None:
        """Generate the synthetic dataset if needed, then check the folder and validate the train and val
        splits (no state is set here)."""
        if self.generator is not None and not self.generator.is_complete(self.root):
            self.generator.generate(self.root)
        self.check_train_masks_dir()
        self._check_root()
        check_voc_layout(
            self.root, {split: self.mask_dir(split) for split in (self.train_split, self.val_split)}
        )
        self.validate_splits()

    def validate_splits(self) -> dict[str, ValidationReport]:
        """Decode and check the files of the train and val splits as ``validate`` says; results are cached
        in ``validation_cache_dir`` (``rca_lightning.data.split_validation``).

        With saliency maps required, building the train split's dataset checks that every image has a map
        (``MissingInput``), ``validate="off"`` included; validation then decodes them.

        Returns:
            Split -> what its validation did (nothing with ``validate="off"``).
        """
        self._files_checked = True
        if self.validate == "off":
            if self.load_saliency:
                self.make_dataset(self.train_split)  # raises when an image has no saliency map
            return {}
        reports = {}
        for split in dict.fromkeys((self.train_split, self.val_split)):
            dataset = self.make_dataset(split)
            check_labels = self.labels_checked_against_masks(split)
            files = [
                ImageFiles(
                    image_id,
                    dataset.image_path(image_id),
                    dataset.mask_path(image_id),
                    dataset.annotation_path(image_id) if check_labels else None,
                    dataset.saliency_path(image_id),
                )
                for image_id in dataset.image_ids
            ]
            mask_folder = dataset.mask_path("").parent
            cache_file = cache_file_for(
                self.validation_cache_dir(), split, mask_folder, saliency_folder=dataset.saliency_dir
            )
            reports[split] = validate_split(
                files, self.class_names, self.split_source(split), mode=self.validate, cache_file=cache_file
            )
        return reports

    def split_source(self, split: str) -> Path:
        """The file that lists the images of ``split`` (named in validation messages)."""
        return split_file_path(self.root, split)

    def check_train_masks_dir(self) -> None:
        """MissingInput when ``train_masks_dir`` is set but is not a folder."""
        if self.train_masks_dir is not None and not self.train_masks_dir.is_dir():
            raise MissingInput(
                f"data.train_masks_dir={self.train_masks_dir} does not exist "
                "(expected a folder of <image id>.png masks)"
            )

    def labels_checked_against_masks(self, split: str) -> bool:
        """Whether validation compares the XML labels of ``split`` with its masks (true masks must agree
        with them; the masks of ``train_masks_dir`` need not)."""
        return self.train_masks_dir is None or split != self.train_split

    def validation_cache_dir(self) -> Path:
        """Folder of the validation cache (``.validation/`` is made in it)."""
        return self.root

    def mask_dir(self, split: str, ground_truth: bool = False) -> str:
        """Mask folder of ``split`` (``train_masks_dir`` for the train split when set, unless
        ``ground_truth``; else the ``mask_dirs`` entry, else ``SegmentationClass``; an absolute folder
        replaces ``root/<folder>``)."""
        if split == self.train_split and self.train_masks_dir is not None and not ground_truth:
            return str(self.train_masks_dir)
        return self.mask_dirs.get(split, DEFAULT_MASK_DIR)

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise MissingInput(
                f"data.root={self.root} not found: expected a VOC2012-layout folder "
                "(or data.generator to create the built-in dataset)"
            )
        names_file = self.root / CLASS_NAMES_FILE
        if names_file.is_file():
            recorded = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
            if recorded != self.class_names:
                raise InvalidSetting(
                    f"{names_file} lists {list(recorded)} but data.class_names is {list(self.class_names)}; "
                    "expected the same names in the same order"
                )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (runs on every rank)."""
        self._check_root()
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self.make_dataset(self.train_split, train=True)
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            self.val_dataset = self.make_dataset(self.val_split, train=False)

    def make_dataset(
        self, split: str, train: bool = False, ground_truth: bool = False
    ) -> VOCSegmentationDataset:
        """A dataset of ``split`` with the training or the evaluation transform (and saliency maps where
        ``saliency_folder`` has them); with ``ground_truth`` its true masks even where ``train_masks_dir``
        replaces them for training."""
        transform = self.train_transform if train else self.eval_transform
        return VOCSegmentationDataset(
            self.root,
            split,
            self.class_names,
            transform=transform,
            mask_dir=self.mask_dir(split, ground_truth),
            saliency_dir=self.saliency_folder(split),
        )

    def _in_order_loader(self, dataset: VOCSegmentationDataset, sampler: Sampler | None = None) -> DataLoader:
        """Loader over a split in order (a ``sampler`` picks this rank's share under DDP)."""
        return DataLoader(
            dataset,
            batch_size=self.val_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> StatefulDataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        trainer = self.trainer
        sampler = StatefulDistributedSampler(
            self.train_dataset,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            shuffle=self.shuffle,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
        )
        return StatefulDataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # Full batches only, unless this rank's share is smaller than one batch. Every rank gets the
            # same number of images, so all ranks always have batches of one size.
            drop_last=len(sampler) >= self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return self._in_order_loader(self.val_dataset)
        share = RankShareSampler(self.val_dataset, trainer.world_size, trainer.global_rank)
        return self._in_order_loader(self.val_dataset, share)

    def test_dataloader(self) -> DataLoader:
        """The validation split again (the segmentation stage's evaluation path scores it)."""
        return self.val_dataloader()

    def predict_dataloader(self, split: str | None = None) -> DataLoader:
        """Loader over ``split`` (default: the validation split) with the evaluation transform."""
        if split is None or split == self.val_split:
            if self.val_dataset is None:
                self.setup("predict")
            dataset = self.val_dataset
        else:
            self._check_root()
            dataset = self.make_dataset(split, train=False)
        return self._in_order_loader(dataset)

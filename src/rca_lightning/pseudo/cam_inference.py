"""Multi-scale, flipped CAM inference of a trained classifier over a split, through ``Trainer.predict``.

The images are read at their original resolution (batch size 1: sizes differ); each is run at every scale,
with its mirror image in the same batch, the ReLU'd maps are resized back to the image and summed, and the
maps of the classes the image is tagged with are scaled to [0, 1] by their maximum. Written per image by
:class:`rca_lightning.pseudo.cam_prediction_writer.CAMWriter`; images with a complete file are not run again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, Subset

from rca_lightning.data.transforms import build_eval_transform
from rca_lightning.imaging.test_time_augmentation import CAM_SCALES, check_views, sum_over_views
from rca_lightning.pseudo.cam_scores import peak_normalise
from rca_lightning.pseudo.cam_writer import pending_image_ids
from rca_lightning.utils.setting_ranges import MAX_WORKERS, number_in_range


def tagged_class_scores(
    summed_cams: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The maps of the classes one image is tagged with, each divided by its maximum.

    Args:
        summed_cams: (C, H, W) non-negative maps of one image.
        labels: (C,) multi-hot tags.

    Returns:
        classes (K,) long, increasing; scores (K, H, W) in [0, 1].
    """
    classes = (labels > 0).nonzero().flatten()  # (K,)
    return classes, peak_normalise(summed_cams[classes], eps)


class CAMPredictor(LightningModule):
    """Predict step of multi-scale flipped CAM inference around a trained classifier.

    Args:
        model: a trained method (:class:`rca_lightning.lit.WSSSMethod`, e.g. ``RCALitModule``): its
            ``predict_cam_maps`` gives the non-negative foreground maps of one pass (ReLU'd CAMs for RCA,
            the softmax over C + 1 without the background for EPS).
        scales: input scales.
        flip: add horizontally flipped inputs.
    """

    def __init__(
        self, model: torch.nn.Module, scales: Sequence[float] = CAM_SCALES, flip: bool = True
    ) -> None:
        super().__init__()
        self.model = model
        self.scales, self.flip = check_views(scales, flip, setting="scales")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H, W) summed multi-scale maps."""
        return sum_over_views(self._positive_maps, images, self.scales, self.flip)

    def _positive_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.predict_cam_maps(images).float().relu()

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        summed = self(batch["image"])  # (B, C, H, W)
        records = []
        for index, image_id in enumerate(batch["image_id"]):  # batch size 1 in practice
            classes, scores = tagged_class_scores(summed[index], batch["labels"][index])
            records.append(
                {"image_id": image_id, "classes": classes.cpu(), "cams": scores.to(torch.float16).cpu()}
            )
        return records


class CAMDataModule(LightningDataModule):
    """Predict loader over the images of a split that have no complete CAM file yet, at full resolution.

    ``setup`` lists the pending images on every rank, then waits at a barrier, so that no rank starts
    writing before every rank has made the same list.

    Args:
        source: the dataset's datamodule (``VOCDataModule`` or a subclass); its ``prepare_data`` checks the
            files and its ``make_dataset`` reads the split.
        split: the split to run on.
        cams_dir: folder of the CAM files.
        num_workers: loader workers (None: the source's ``num_workers``).
    """

    def __init__(
        self,
        source: LightningDataModule,
        split: str,
        cams_dir: str | os.PathLike,
        num_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.split = split
        self.cams_dir = cams_dir
        self.num_workers = source.num_workers if num_workers is None else num_workers
        number_in_range("num_workers", self.num_workers, 0, MAX_WORKERS, integer=True)
        self.dataset = None
        self.pending: list[int] = []

    def prepare_data(self) -> None:
        self.source.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        dataset = self.source.make_dataset(self.split, train=False)
        dataset.transform = build_eval_transform(None)  # keep each image's own size
        self.dataset = dataset
        self.pending = pending_image_ids(self.cams_dir, dataset.image_ids)
        if self.trainer is not None:
            self.trainer.strategy.barrier("cam_inference_pending_listed")

    def predict_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.setup("predict")
        return DataLoader(
            Subset(self.dataset, self.pending),
            batch_size=1,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=False,
        )

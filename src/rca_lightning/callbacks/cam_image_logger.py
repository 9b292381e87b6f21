"""Callback that shows, after each validation, the CAMs and pseudo masks of a few fixed validation images."""

from __future__ import annotations

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.seed import isolate_rng
from torch.utils.data import default_collate

from rca_lightning.imaging.drawing import cam_overlay, colourise_mask
from rca_lightning.imaging.image_arrays import denormalise_images
from rca_lightning.pseudo.cam_scores import masks_from_scores, normalized_cam_scores
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.image_logging import log_images

OVERLAY_KEY = "val/cam_overlay"
PSEUDO_MASK_KEY = "val/pseudo_mask"


class CAMImageLoggerCallback(Callback):
    """Logs CAM overlays and pseudo masks of the first ``num_images`` validation images after validation.

    Rank zero only; images go to every logger of the run through :func:`rca_lightning.utils.log_images`
    (wandb images, TensorBoard images, PNG files beside the CSV logs). Two groups per validation:
    ``val/cam_overlay`` (turbo heat map of the tagged classes' top score; captions name the classes) and
    ``val/pseudo_mask`` (the CAM pseudo mask at the last validation's best background threshold, beside
    the ground truth; VOC colours). The images are read once; reading them draws no random number that
    training would otherwise draw, so resumed runs stay exact.

    Args:
        num_images: how many validation images (the first ones of the split).
        every_n_epochs: log after every n-th validation epoch.
        default_threshold: background threshold before ``val/cam_threshold`` has been logged.
    """

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1, default_threshold: float = 0.3) -> None:
        super().__init__()
        for setting, value in (("num_images", num_images), ("every_n_epochs", every_n_epochs)):
            if value < 1:
                raise InvalidSetting(f"{setting}: expected a positive integer, got {value}")
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.default_threshold = default_threshold
        self._batch: dict | None = None

    def _fixed_batch(self, trainer: Trainer) -> dict:
        if self._batch is None:
            dataset = getattr(trainer.val_dataloaders, "dataset", None)
            if dataset is None:
                raise ValueError(
                    "CAMImageLoggerCallback: expected one val DataLoader with a map-style dataset"
                )
            with isolate_rng():
                items = [dataset[index] for index in range(min(self.num_images, len(dataset)))]
            self._batch = default_collate(items)
        return self._batch

    @torch.no_grad()
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero
            or not trainer.loggers
            or (trainer.current_epoch + 1) % self.every_n_epochs != 0
        ):
            return
        batch = self._fixed_batch(trainer)
        images, labels, masks = batch["image"], batch["labels"], batch["mask"]  # (B,3,H,W), (B,C), (B,H,W)
        was_training = pl_module.training
        pl_module.eval()
        output = pl_module(images.to(pl_module.device))
        pl_module.train(was_training)
        scores = normalized_cam_scores(
            pl_module.cam_maps(output), labels.to(pl_module.device), masks.shape[-2:]
        ).cpu()
        threshold = float(trainer.callback_metrics.get("val/cam_threshold", self.default_threshold))
        pseudo_masks = masks_from_scores(scores, threshold).numpy()  # (B, H, W)

        rgb = denormalise_images(images).numpy()  # (B, H, W, 3)
        class_names = pl_module.class_names
        overlays, mask_pairs, captions = [], [], []
        for image, image_scores, image_labels, pseudo, truth, image_id in zip(
            rgb, scores.numpy(), labels.numpy(), pseudo_masks, masks.numpy(), batch["image_id"], strict=True
        ):
            tagged = np.flatnonzero(image_labels > 0)  # (K,)
            overlays.append(cam_overlay(image, image_scores[tagged]))
            mask_pairs.append(np.concatenate([colourise_mask(pseudo), colourise_mask(truth)], axis=1))
            captions.append(f"{image_id}: {', '.join(class_names[c] for c in tagged) or 'no class'}")
        step = trainer.global_step
        log_images(trainer.loggers, OVERLAY_KEY, overlays, captions, step)
        log_images(
            trainer.loggers,
            PSEUDO_MASK_KEY,
            mask_pairs,
            [f"{caption} (pseudo mask at {threshold:.2f} | ground truth)" for caption in captions],
            step,
        )


__all__ = ["CAMImageLoggerCallback"]

"""LightningModule training a segmentation network (DeepLab) on pseudo masks, scored on ground truth."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.imaging.image_arrays import IMAGENET_MEAN, IMAGENET_STD, denormalise_images
from rca_lightning.imaging.test_time_augmentation import average_over_views, check_views
from rca_lightning.lit.optimization import PolyScheduleLength, grouped_optimizer, poly_schedule
from rca_lightning.metrics import ClassImageCount, iou_from_confusion
from rca_lightning.utils.errors import InvalidSetting

# DeepLab-v2 recipe: pretrained backbone 1x, new layers 10x (their biases 20x).
DEFAULT_LR_MULTIPLIERS = {"backbone_weight": 1.0, "backbone_bias": 1.0, "new_weight": 10.0, "new_bias": 20.0}

# (image (H, W, 3) uint8 RGB, probabilities (K, H, W) float32) -> refined probabilities (K, H, W).
ProbabilityRefiner = Callable[[np.ndarray, np.ndarray], np.ndarray]


class SegLitModule(PolyScheduleLength, LightningModule):
    """Segmentation network trained with cross-entropy on (pseudo) masks whose 255 pixels are ignored.

    Validation scores the plain forward pass with one dataset-level confusion matrix (``val/seg_mIoU``,
    percent, plus ``val/IoU_<class>``). The test loop and ``predict_step`` are the evaluation path:
    logits averaged over ``tta_scales`` (and horizontal flips) at image size, then optionally refined by
    ``crf``; the test loop logs ``test/seg_mIoU`` and ``test/IoU_<class>``.

    Args:
        net: ``(B, 3, H, W) -> logits (B, num_classes + 1, H, W)`` with ``parameter_groups()``
            (e.g. ``DeepLabV2``, ``DeepLabV3Plus``).
        optimizer: partial optimiser (e.g. ``SGD`` with its base ``lr``); receives the parameter groups.
        num_classes: foreground classes C (the metrics count C + 1 with background).
        class_names: foreground class names for the per-class IoU keys (default: class indices).
        ignore_index: mask value left out of the loss and the metrics.
        poly_power: exponent of the poly learning-rate schedule, stepped every optimiser step over
            ``trainer.estimated_stepping_batches`` (read at the first step, so resumed runs continue exactly).
        lr_multipliers: multipliers of the base lr per ``net.parameter_groups()`` key; ``*_bias`` groups
            get no weight decay.
        tta_scales: input scales averaged at evaluation (test / predict).
        tta_flip: also average the horizontally flipped input at every scale.
        crf: optional refinement at evaluation, ``(image uint8 (H, W, 3), probs (K, H, W)) -> probs``
            (e.g. a dense CRF); None skips it.
        image_mean: normalisation mean (0..1) of the loaders, to give ``crf`` the original image.
        image_std: normalisation std (0..1) of the loaders.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        poly_power: float = 0.9,
        lr_multipliers: dict[str, float] | None = None,
        tta_scales: Sequence[float] = (1.0,),
        tta_flip: bool = False,
        crf: ProbabilityRefiner | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        net_classes = getattr(net, "num_classes", num_classes)
        if net_classes != num_classes:
            raise InvalidSetting(f"num_classes: expected net.num_classes ({net_classes}), got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise InvalidSetting(
                f"class_names: expected num_classes ({num_classes}) names, got {len(class_names)}"
            )
        check_views(tta_scales, tta_flip)
        if crf is not None and not callable(crf):
            raise InvalidSetting(
                f"crf: expected a callable (image, probs) -> probs or None, got {type(crf).__name__}"
            )
        # Plain Python values (not OmegaConf containers), so checkpoints load with weights_only=True.
        class_names = [str(name) for name in class_names] if class_names is not None else None
        lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        tta_scales = [float(scale) for scale in tta_scales]
        image_mean, image_std = [float(v) for v in image_mean], [float(v) for v in image_std]
        self.save_hyperparameters(ignore=["net", "optimizer", "crf"])
        self.net = net
        self.optimizer_factory = optimizer
        self.crf = crf
        self.lr_multipliers = {**DEFAULT_LR_MULTIPLIERS, **lr_multipliers}
        names = list(class_names) if class_names is not None else [str(i) for i in range(1, num_classes + 1)]
        self.metric_class_names = ["background", *names]
        self.val_confusion = MulticlassConfusionMatrix(num_classes + 1, ignore_index=ignore_index)
        self.test_confusion = MulticlassConfusionMatrix(num_classes + 1, ignore_index=ignore_index)
        # The last computed confusion of each loop ("val", "test"): pixel counts, rows ground truth.
        self.confusion_counts: dict[str, list[list[int]]] = {}
        # How many test images hold each class in their ground truth (the images behind each test IoU).
        self.test_images = ClassImageCount(num_classes + 1, ignore_index=ignore_index)
        self.test_image_counts: list[int] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: logits (B, C + 1, H, W)."""
        return self.net(images)

    def segmentation_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over non-ignored pixels; 0 (with a graph) when every pixel is ignored."""
        ignore = self.hparams.ignore_index
        total = F.cross_entropy(logits, masks, ignore_index=ignore, reduction="sum")
        return total / (masks != ignore).sum().clamp_min(1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, masks = batch["image"], batch["mask"]  # (B, 3, H, W), (B, H, W)
        loss = self.segmentation_loss(self(images), masks)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, masks = batch["image"], batch["mask"]
        logits = self(images)  # (B, C + 1, H, W)
        self.log("val/loss", self.segmentation_loss(logits, masks), prog_bar=True, batch_size=images.shape[0])
        self.val_confusion.update(logits.argmax(1), masks)

    def on_validation_epoch_end(self) -> None:
        self._log_confusion("val", self.val_confusion)

    @torch.no_grad()
    def predict_scores(
        self, images: torch.Tensor, tta_scales: Sequence[float] | None = None, tta_flip: bool | None = None
    ) -> torch.Tensor:
        """The evaluation path: test-time augmentation, then the optional CRF.

        Args:
            images: (B, 3, H, W) normalised images.
            tta_scales: the views' scales (None: ``tta_scales`` of the module).
            tta_flip: also the mirrored images (None: ``tta_flip`` of the module).

        Returns:
            (B, C + 1, H, W) class scores: logits averaged over the scales (and flips), or class
            probabilities refined by ``crf`` when it is set. Their argmax is the prediction.
        """
        scales = self.hparams.tta_scales if tta_scales is None else tta_scales
        flip = self.hparams.tta_flip if tta_flip is None else tta_flip
        scores = average_over_views(self, images, scales, flip)
        if self.crf is not None:
            scores = self._refine_with_crf(images, scores.softmax(1))
        return scores  # (B, C + 1, H, W)

    def _refine_with_crf(self, images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        pixels = denormalise_images(images, self.hparams.image_mean, self.hparams.image_std)
        pixels_np = pixels.cpu().numpy()  # (B, H, W, 3)
        probs_np = probs.float().cpu().numpy()  # (B, K, H, W)
        # The CRF is a per-image CPU routine (e.g. pydensecrf): one call per image.
        refined = [
            np.asarray(self.crf(np.ascontiguousarray(p), q), np.float32)
            for p, q in zip(pixels_np, probs_np, strict=True)
        ]
        refined_tensor = torch.from_numpy(np.stack(refined)).to(probs.device)
        if refined_tensor.shape != probs.shape:
            raise ValueError(
                f"crf returned {tuple(refined_tensor.shape[1:])}, expected {tuple(probs.shape[1:])}"
            )
        return refined_tensor

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.test_confusion.update(self.predict_scores(batch["image"]).argmax(1), batch["mask"])
        self.test_images.update(batch["mask"])

    def on_test_epoch_end(self) -> None:
        self._log_confusion("test", self.test_confusion)
        self.test_image_counts = self.test_images.compute().tolist()  # summed over the processes
        self.test_images.reset()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Returns ``image_id`` (list of B) and ``prediction`` (B, H, W) uint8 class indices on the CPU."""
        prediction = self.predict_scores(batch["image"]).argmax(1).to(torch.uint8).cpu()
        return {"image_id": batch["image_id"], "prediction": prediction}

    def _log_confusion(self, stage: str, confusion_metric: MulticlassConfusionMatrix) -> None:
        confusion = confusion_metric.compute()  # (K, K), rows = ground truth, columns = prediction
        self.confusion_counts[stage] = confusion.long().tolist()
        iou = iou_from_confusion(confusion)  # (K,), NaN for classes absent from both
        self.log(f"{stage}/seg_mIoU", (iou.nanmean() * 100).float(), prog_bar=True)
        for name, value in zip(self.metric_class_names, iou.tolist(), strict=True):
            if not np.isnan(value):
                self.log(f"{stage}/IoU_{name}", value * 100)
        confusion_metric.reset()

    def configure_optimizers(self) -> dict:
        optimizer = grouped_optimizer(
            self.net.parameter_groups(), self.optimizer_factory, self.lr_multipliers
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": poly_schedule(optimizer, self.hparams.poly_power),
        }


__all__ = ["SegLitModule"]

"""What a weakly supervised segmentation method gives the rest of the pipeline: the seam methods plug into.

A method is a LightningModule trained on images with tags that subclasses :class:`WSSSMethod`. The
stages after training see it only through this class:

* ``cam_maps(output)``: (B, C, h, w) non-negative foreground maps of the classes. Validation scores them,
  the image logger draws them, the attention accumulation stores them and ``rca-cams`` sums them over
  scales and flips (then divides each tagged class by its maximum). How a method gets them is its own
  business: ReLU'd class maps for RCA and plain CAM, the softmax over C + 1 with the background dropped
  for EPS.
* ``class_logits(output)``: (B, C) image-level scores, for the validation AP (of the classes with a
  positive val image: :meth:`WSSSMethod.average_precision_metrics`).
* ``training_losses(output, batch)``: the named loss terms and their weighted total.
* ``needs_saliency``: the method trains with saliency maps (``batch["saliency"]``); the datamodule is asked
  for them (``require_saliency``) before any dataset is built.
* ``pseudo_mask_settings``: the ``rca-pseudo`` settings its CAMs are meant for, by name (EPS:
  ``{"background_threshold": 0.2, "crf": False}``, a constant background score, no CRF); ``rca-cams``
  records them and ``rca-pipeline`` applies them
  (:data:`rca_lightning.pseudo.stage_records.PSEUDO_MASK_SETTINGS` lists the names).
* ``configure_callbacks`` (Lightning's hook): the callbacks it needs, attached by the method itself (RCA
  attaches its memory-bank callback), so no run's callback list names them.

Everything else is shared here: the validation CAM mIoU sweep and per-class AP, and the optimiser over
the network's parameter groups with their lr multipliers and an epoch-milestone schedule. A new method
is one subclass and one ``conf/model/*.yaml``; nothing else branches on the method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric

from rca_lightning.lit.optimization import PolyScheduleLength, grouped_optimizer, poly_schedule
from rca_lightning.lit.training_settings import MethodSettings
from rca_lightning.metrics import CAMThresholdSweep, PresentClassAveragePrecision
from rca_lightning.pseudo.cam_scores import normalized_cam_scores
from rca_lightning.utils.errors import InvalidSetting


class WSSSMethod(PolyScheduleLength, LightningModule):
    """Base of the CAM classifiers: shared validation, optimiser and schedule; the rest is the method's.

    Subclasses set ``self.net`` (with ``parameter_groups()`` and ``num_classes``) and ``self.class_names``,
    and implement :meth:`forward`, :meth:`cam_maps`, :meth:`class_logits` and :meth:`training_losses`.

    Args:
        num_classes: foreground classes C.
        optimizer: partial optimiser (e.g. ``SGD`` with its base ``lr``); receives the parameter groups.
        settings: the lr multipliers, schedule and CAM threshold sweep (a method's settings derive from
            :class:`~rca_lightning.lit.training_settings.MethodSettings`).
    """

    needs_saliency: ClassVar[bool] = False

    def __init__(
        self, num_classes: int, optimizer: Callable[..., torch.optim.Optimizer], settings: MethodSettings
    ) -> None:
        super().__init__()
        self.settings = settings
        self.optimizer_factory = optimizer
        start, stop, step = settings.cam_thresholds
        thresholds = torch.arange(round((stop - start) / step) + 1, dtype=torch.float64) * step + start
        self.val_cam_sweep = CAMThresholdSweep(num_classes, thresholds.float())
        # Per-class AP tells classification failures (a class never recognised) from localisation ones; a
        # class with no positive val image has none and stays out of the mean.
        self.val_ap = PresentClassAveragePrecision(num_labels=num_classes)
        self.val_loss = MeanMetric()

    # --- what a method provides -------------------------------------------------------------------------

    def cam_maps(self, output: Any) -> torch.Tensor:
        """(B, C, h, w) non-negative foreground maps from the output of :meth:`forward`."""
        raise NotImplementedError

    def class_logits(self, output: Any) -> torch.Tensor:
        """(B, C) image-level class scores (logits) from the output of :meth:`forward`."""
        raise NotImplementedError

    def training_losses(self, output: Any, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total loss and its named terms, for ``batch``."""
        raise NotImplementedError

    def validation_loss(self, output: Any, batch: dict) -> torch.Tensor:
        """The loss logged as ``val/loss``: the training loss (methods whose terms need training-only
        inputs, such as saliency maps, leave those out)."""
        return self.training_losses(output, batch)[0]

    @property
    def pseudo_mask_settings(self) -> dict[str, float | bool]:
        """``rca-pseudo`` settings this method's CAMs are meant for (none: ``rca-pseudo``'s defaults)."""
        return {}

    def predict_cam_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C, h, w) non-negative foreground maps."""
        return self.cam_maps(self(images))

    # --- shared -----------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.needs_saliency and stage == "fit":
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "require_saliency"):
                raise InvalidSetting(
                    f"data: {type(self).__name__} trains with saliency maps; expected a datamodule with "
                    "saliency maps (data.saliency_dir), got none"
                )
            datamodule.require_saliency()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, labels, masks = batch["image"], batch["labels"], batch["mask"]
        output = self(images)
        self.val_loss.update(self.validation_loss(output, batch), weight=images.shape[0])
        self.log("val/loss", self.val_loss, prog_bar=True, on_step=False, on_epoch=True)
        # The protocol scores CAMs of the classes the image is tagged with.
        self.val_cam_sweep.update(
            normalized_cam_scores(self.cam_maps(output), labels, masks.shape[-2:]), masks
        )
        self.val_ap.update(torch.sigmoid(self.class_logits(output)), labels.long())

    def on_validation_epoch_end(self) -> None:
        sweep = self.val_cam_sweep.compute()
        self.log("val/cam_mIoU", sweep["best_miou"].float() * 100, prog_bar=True)
        self.log("val/cam_threshold", sweep["best_threshold"])
        self.log_dict(self.average_precision_metrics())
        self.val_cam_sweep.reset()
        self.val_ap.reset()

    def average_precision_metrics(self) -> dict[str, float]:
        """The validation AP of the epoch, in percent, over the classes with a positive val image.

        ``val/AP_images_<class>``: how many val images are tagged with the class (0: absent from the split);
        ``val/AP_<class>``: its AP, logged only for a class with such an image (a class without one has no
        AP: neither 0, which would drag the mean down, nor NaN, which ``metrics.json`` cannot hold);
        ``val/mAP``: the mean over those classes, not logged when there is none (``checkpoint=best_map``
        then stops with Lightning's error that the checkpoint finds no ``val/mAP`` to monitor).
        """
        result = self.val_ap.compute()  # summed over the processes
        per_class, positives = (result["average_precision"] * 100).tolist(), result["positives"].tolist()
        metrics = {}
        for name, value, count in zip(self.class_names, per_class, positives, strict=True):
            metrics[f"val/AP_images_{name}"] = float(count)
            if count > 0:
                metrics[f"val/AP_{name}"] = value
        if any(count > 0 for count in positives):
            metrics["val/mAP"] = float(result["average_precision"].nanmean()) * 100
        else:
            rank_zero_warn("val/mAP not logged: no val image is tagged with any class")
        return metrics

    def configure_optimizers(self) -> dict:
        optimizer = grouped_optimizer(
            self.net.parameter_groups(),
            self.optimizer_factory,
            self.settings.group_lr_multipliers,
            self.settings.bias_weight_decay,
        )
        if self.settings.lr_schedule == "poly":
            return {
                "optimizer": optimizer,
                "lr_scheduler": poly_schedule(optimizer, self.settings.poly_power),
            }
        # Stepped at each epoch end: the learning rates of a per-step schedule with epoch milestones.
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(self.settings.lr_milestone_epochs), gamma=self.settings.lr_gamma
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


__all__ = ["WSSSMethod"]

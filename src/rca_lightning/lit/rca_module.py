"""LightningModule that trains the RCA CAM classifier (or the plain CAM baseline with RCA switched off)."""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import MeanMetric
from torchmetrics.classification import MultilabelAveragePrecision

from rca_lightning.callbacks import MemoryBankCallback
from rca_lightning.losses import SemanticContrastLoss
from rca_lightning.memory import RegionalMemoryBank, masked_average_pool, region_masks
from rca_lightning.metrics import CAMThresholdSweep
from rca_lightning.models import RCANet, RCAOutput
from rca_lightning.pseudo.cam_scores import normalized_cam_scores
from rca_lightning.utils.errors import InvalidSetting

# Learning-rate multipliers of the public code: pretrained weights 1x, their biases 2x, new layers 10x / 20x.
DEFAULT_LR_MULTIPLIERS = {"backbone_weight": 1.0, "backbone_bias": 2.0, "new_weight": 10.0, "new_bias": 20.0}
# Whose multipliers the aggregation layers' parameter groups take.
AGGREGATION_LR_SOURCES = ("new", "backbone")


class RCALitModule(LightningModule):
    """RCA classifier: multilabel soft-margin losses on both heads plus the semantic contrast.

    The regional memory bank's life cycle (enqueue after each step, prototypes at each epoch start,
    contrast on from its start epoch) is driven by :class:`rca_lightning.callbacks.MemoryBankCallback`;
    its state lives in ``memory_bank``'s buffers, so checkpoints and device moves carry it. DDP does not
    broadcast those buffers from rank zero before every forward (as it does BatchNorm statistics): the
    callback gathers every rank's regions and each rank applies the same update instead, which keeps the
    banks identical without sending the whole bank every step.

    Validation metrics are torchmetrics objects, summed over ranks when computed; with a validation
    sampler that repeats no image (``VOCDataModule`` uses one under DDP) every image counts exactly once.

    Args:
        net: the classifier network.
        memory_bank: the regional memory bank, ``dim == net.embedding_dim``.
        contrast_loss: the semantic contrast loss.
        optimizer: partial optimiser (e.g. ``SGD`` with its base ``lr``); receives the parameter groups.
        class_names: foreground class names, for logging.
        use_contrast: add the semantic contrast term (once the callback switches it on).
        contrast_weight: weight of the contrast term (0.01 in the public code).
        coarse_loss_weight: weight of the coarse head's loss (0.4).
        confidence_threshold: a present class's region enters the bank when sigmoid(score) exceeds this (0.7).
        lr_multipliers: multipliers of the base lr for the parameter groups of ``net.parameter_groups()``
            (``backbone_*`` and ``new_*``; the ``aggregation_*`` groups follow ``aggregation_lr``).
        aggregation_lr: the aggregation layers train with the ``"new"`` layers' multipliers (10x / 20x) or
            the ``"backbone"``'s (1x / 2x, the public code's, where only ``extra*`` layers get 10x / 20x).
        bias_weight_decay: apply the optimiser's weight decay to the ``*_bias`` groups too (biases and
            normalisation parameters), as the public code does; False leaves them undecayed.
        lr_milestone_epochs: epochs after which the lr is multiplied by ``lr_gamma``.
        lr_gamma: the decay factor.
        cam_thresholds: (start, stop, step) of the background-threshold sweep for val CAM mIoU.
    """

    def __init__(
        self,
        net: RCANet,
        memory_bank: RegionalMemoryBank,
        contrast_loss: SemanticContrastLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        class_names: Sequence[str],
        use_contrast: bool = True,
        contrast_weight: float = 0.01,
        coarse_loss_weight: float = 0.4,
        confidence_threshold: float = 0.7,
        lr_multipliers: dict[str, float] | None = None,
        aggregation_lr: str = "new",
        bias_weight_decay: bool = False,
        lr_milestone_epochs: Sequence[int] = (5, 10),
        lr_gamma: float = 0.1,
        cam_thresholds: Sequence[float] = (0.0, 0.6, 0.01),
    ) -> None:
        super().__init__()
        if memory_bank.dim != net.embedding_dim:
            raise InvalidSetting(
                f"memory_bank.dim: expected net.embedding_dim ({net.embedding_dim}), got {memory_bank.dim}"
            )
        if len(class_names) != net.num_classes:
            raise InvalidSetting(
                f"class_names: expected net.num_classes ({net.num_classes}) names, got {len(class_names)}"
            )
        if aggregation_lr not in AGGREGATION_LR_SOURCES:
            raise InvalidSetting(
                f"aggregation_lr: expected one of {list(AGGREGATION_LR_SOURCES)}, got '{aggregation_lr}'"
            )
        aggregation_keys = sorted(key for key in lr_multipliers or {} if key.startswith("aggregation_"))
        if aggregation_keys:
            raise InvalidSetting(
                f"lr_multipliers: {aggregation_keys} are set by aggregation_lr ('new' or 'backbone'), "
                "not given directly"
            )
        # Only plain values go into the checkpoint's hyperparameters, so it loads with weights_only=True.
        self.save_hyperparameters(ignore=["net", "memory_bank", "contrast_loss", "optimizer"])
        self.optimizer_factory = optimizer
        self.net = net
        self.memory_bank = memory_bank
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self, [f"memory_bank.{name}" for name, _ in memory_bank.named_buffers()]
        )
        self.contrast_loss = contrast_loss
        self.class_names = list(class_names)
        self.lr_multipliers = {**DEFAULT_LR_MULTIPLIERS, **(lr_multipliers or {})}
        # Set each epoch by MemoryBankCallback; a plain attribute because it follows from the epoch.
        self.contrast_active = False

        start, stop, step = cam_thresholds
        thresholds = torch.arange(round((stop - start) / step) + 1, dtype=torch.float64) * step + start
        self.val_cam_sweep = CAMThresholdSweep(net.num_classes, thresholds.float())
        # Per-class AP tells classification failures (a class never recognised) from localisation ones.
        self.val_ap = MultilabelAveragePrecision(num_labels=net.num_classes, average=None)
        self.val_loss = MeanMetric()

    @property
    def uses_memory_bank(self) -> bool:
        """Whether region embeddings are collected at all (the plain CAM baseline skips that work)."""
        return self.hparams.use_contrast or self.net.aggregation

    def forward(self, images: torch.Tensor) -> RCAOutput:
        """Run the network with the bank's current prototypes (when aggregation is on)."""
        if not self.net.aggregation:
            return self.net(images)
        return self.net(images, self.memory_bank.prototypes, self.memory_bank.prototype_valid)

    def on_fit_start(self) -> None:
        if self.uses_memory_bank and not any(
            isinstance(c, MemoryBankCallback) for c in self.trainer.callbacks
        ):
            raise InvalidSetting(
                "callbacks: RCALitModule with contrast or aggregation on needs a MemoryBankCallback "
                "(callbacks.memory_bank), found none in Trainer(callbacks=...)"
            )

    def _classification_losses(self, output: RCAOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "cls": F.multilabel_soft_margin_loss(output.logits, labels),
            "coarse": F.multilabel_soft_margin_loss(output.coarse_logits, labels),
        }

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        images, labels = batch["image"], batch["labels"]  # (B, 3, H, W), (B, C)
        output = self(images)
        losses = self._classification_losses(output, labels)
        loss = losses["cls"] + self.hparams.coarse_loss_weight * losses["coarse"]
        step_output: dict[str, torch.Tensor] = {}

        if self.uses_memory_bank:
            masks = region_masks(output.coarse_cams.detach())  # (B, C, h, w)
            present = (labels > 0) & masks.flatten(2).any(-1)  # (B, C)
            projected_regions = masked_average_pool(output.projected, masks)  # (B, C, P), with grad
            bank_regions = (
                projected_regions
                if self.net.embedding_source == "projection"
                else masked_average_pool(output.features, masks)
            )
            confident = present & (torch.sigmoid(output.logits.detach()) > self.hparams.confidence_threshold)
            step_output = {"region_embeddings": bank_regions.detach(), "region_confident": confident}

            if self.hparams.use_contrast and self.contrast_active:
                image_index, class_index = present.nonzero(as_tuple=True)
                losses["contrast"] = self.contrast_loss(
                    projected_regions[image_index, class_index],
                    class_index,
                    image_index,
                    self.memory_bank.queue,
                    self.memory_bank.valid_slots(),
                )
                loss = loss + self.hparams.contrast_weight * losses["contrast"]

        batch_size = images.shape[0]
        for name, value in losses.items():
            self.log(f"train/loss_{name}", value, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        # cams / logits feed the attention-accumulation callback (detached: no graph kept alive).
        return {"loss": loss, **step_output, "cams": output.cams.detach(), "logits": output.logits.detach()}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, labels, masks = batch["image"], batch["labels"], batch["mask"]
        output = self(images)
        losses = self._classification_losses(output, labels)
        loss = losses["cls"] + self.hparams.coarse_loss_weight * losses["coarse"]
        self.val_loss.update(loss, weight=images.shape[0])
        self.log("val/loss", self.val_loss, prog_bar=True, on_step=False, on_epoch=True)
        # The protocol scores CAMs of the classes the image is tagged with.
        self.val_cam_sweep.update(normalized_cam_scores(output.cams, labels, masks.shape[-2:]), masks)
        self.val_ap.update(torch.sigmoid(output.logits), labels.long())

    def on_validation_epoch_end(self) -> None:
        sweep = self.val_cam_sweep.compute()
        self.log("val/cam_mIoU", sweep["best_miou"].float() * 100, prog_bar=True)
        self.log("val/cam_threshold", sweep["best_threshold"])
        per_class_ap = self.val_ap.compute() * 100  # (C,)
        self.log("val/mAP", per_class_ap.mean())
        for name, ap in zip(self.class_names, per_class_ap, strict=True):
            self.log(f"val/AP_{name}", ap)
        self.val_cam_sweep.reset()
        self.val_ap.reset()

    def configure_optimizers(self) -> dict:
        groups = self.net.parameter_groups()
        source = self.hparams.aggregation_lr
        multipliers = {
            **self.lr_multipliers,
            "aggregation_weight": self.lr_multipliers[f"{source}_weight"],
            "aggregation_bias": self.lr_multipliers[f"{source}_bias"],
        }
        unknown = set(groups) - set(multipliers)
        if unknown:
            raise ValueError(f"lr_multipliers has no entry for parameter groups {sorted(unknown)}")
        optimizer = self.optimizer_factory(
            [{"params": params, "name": name} for name, params in groups.items() if params]
        )
        for group in optimizer.param_groups:
            group["lr"] *= multipliers[group["name"]]
            if group["name"].endswith("_bias") and not self.hparams.bias_weight_decay:
                group["weight_decay"] = 0.0  # biases and norm parameters
        # Stepped at each epoch end: the same learning rates as a per-step schedule with milestones at
        # epoch boundaries, without asking the trainer for its number of batches here. (Asking through
        # ``trainer.estimated_stepping_batches`` builds the train loader before a checkpoint's loop state is
        # restored, and Lightning then never restores the loader's position: Lightning issue #20550.)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(self.hparams.lr_milestone_epochs), gamma=self.hparams.lr_gamma
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


__all__ = ["RCALitModule"]

"""LightningModule that trains the RCA CAM classifier (or the plain CAM baseline with RCA switched off)."""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from lightning import Callback
from torch.nn.parallel import DistributedDataParallel

from rca_lightning.callbacks import MemoryBankCallback
from rca_lightning.lit.wsss_method import WSSSMethod
from rca_lightning.losses import SemanticContrastLoss
from rca_lightning.memory import RegionalMemoryBank, masked_average_pool, region_masks
from rca_lightning.models import RCANet, RCAOutput
from rca_lightning.utils.errors import InvalidSetting

# Learning-rate multipliers of the public code: pretrained weights 1x, their biases 2x, new layers 10x / 20x.
DEFAULT_LR_MULTIPLIERS = {"backbone_weight": 1.0, "backbone_bias": 2.0, "new_weight": 10.0, "new_bias": 20.0}
# Whose multipliers the aggregation layers' parameter groups take.
AGGREGATION_LR_SOURCES = ("new", "backbone")


class RCALitModule(WSSSMethod):
    """RCA classifier: multilabel soft-margin losses on both heads plus the semantic contrast.

    The regional memory bank's life cycle (enqueue after each step, prototypes at each epoch start,
    contrast on from its start epoch) is driven by :class:`rca_lightning.callbacks.MemoryBankCallback`,
    which the module attaches itself (``configure_callbacks``) when it uses the bank; its state lives in
    ``memory_bank``'s buffers, so checkpoints and device moves carry it. DDP does not broadcast those
    buffers from rank zero before every forward (as it does BatchNorm statistics): the callback gathers
    every rank's regions and each rank applies the same update instead, which keeps the banks identical
    without sending the whole bank every step.

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
        lr_schedule: ``"step"`` (``lr_milestone_epochs`` / ``lr_gamma``) or ``"poly"`` (``poly_power``), see
            :class:`rca_lightning.lit.WSSSMethod`.
        lr_milestone_epochs: epochs after which the lr is multiplied by ``lr_gamma``.
        lr_gamma: the decay factor.
        poly_power: exponent of the poly schedule.
        cam_thresholds: (start, stop, step) of the background-threshold sweep for val CAM mIoU.
        contrast_start_epoch: first epoch (0-based) with the contrast term (2 in the public code).
        prototype_start_epoch: first epoch whose start recomputes the k-means prototypes (1).
        log_memory_fill: log each class's fraction of written bank slots at every epoch end.
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
        lr_schedule: str = "step",
        lr_milestone_epochs: Sequence[int] = (5, 10),
        lr_gamma: float = 0.1,
        poly_power: float = 0.9,
        cam_thresholds: Sequence[float] = (0.0, 0.6, 0.01),
        contrast_start_epoch: int = 2,
        prototype_start_epoch: int = 1,
        log_memory_fill: bool = True,
    ) -> None:
        super().__init__(
            num_classes=net.num_classes,
            optimizer=optimizer,
            lr_multipliers={**DEFAULT_LR_MULTIPLIERS, **(lr_multipliers or {})},
            bias_weight_decay=bias_weight_decay,
            lr_schedule=lr_schedule,
            lr_milestone_epochs=lr_milestone_epochs,
            lr_gamma=lr_gamma,
            poly_power=poly_power,
            cam_thresholds=cam_thresholds,
        )
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
        self.save_hyperparameters(
            ignore=["net", "memory_bank", "contrast_loss", "saliency_loss", "optimizer"]
        )
        self.net = net
        self.memory_bank = memory_bank
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self, [f"memory_bank.{name}" for name, _ in memory_bank.named_buffers()]
        )
        self.contrast_loss = contrast_loss
        self.class_names = list(class_names)
        # Set each epoch by MemoryBankCallback; a plain attribute because it follows from the epoch.
        self.contrast_active = False

    @property
    def uses_memory_bank(self) -> bool:
        """Whether region embeddings are collected at all (the plain CAM baseline skips that work)."""
        return self.hparams.use_contrast or self.net.aggregation

    def forward(self, images: torch.Tensor) -> RCAOutput:
        """Run the network with the bank's current prototypes (when aggregation is on)."""
        if not self.net.aggregation:
            return self.net(images)
        return self.net(images, self.memory_bank.prototypes, self.memory_bank.prototype_valid)

    def configure_callbacks(self) -> list[Callback]:
        """The memory-bank callback when the bank is used (it replaces one the trainer was given)."""
        if not self.uses_memory_bank:
            return []
        return [
            MemoryBankCallback(
                contrast_start_epoch=self.hparams.contrast_start_epoch,
                prototype_start_epoch=self.hparams.prototype_start_epoch,
                log_fill=self.hparams.log_memory_fill,
            )
        ]

    def cam_maps(self, output: RCAOutput) -> torch.Tensor:
        """The class heads' maps, ReLU'd: (B, C, h, w)."""
        return output.cams.relu()

    def class_logits(self, output: RCAOutput) -> torch.Tensor:
        return output.logits

    def training_losses(self, output: RCAOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Multilabel soft-margin losses of the class heads and (when built) the coarse head."""
        labels = batch["labels"]
        losses = {"cls": F.multilabel_soft_margin_loss(output.logits, labels)}
        loss = losses["cls"]
        if output.coarse_logits is not None:
            losses["coarse"] = F.multilabel_soft_margin_loss(output.coarse_logits, labels)
            loss = loss + self.hparams.coarse_loss_weight * losses["coarse"]
        return loss, losses

    def region_source(self, output: RCAOutput) -> torch.Tensor:
        """(B, C', h, w) maps whose softmax gives the class regions: the coarse head's, else the class
        heads'."""
        return output.coarse_cams if output.coarse_cams is not None else output.cams

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        images, labels = batch["image"], batch["labels"]  # (B, 3, H, W), (B, C)
        output = self(images)
        loss, losses = self.training_losses(output, batch)
        step_output: dict[str, torch.Tensor] = {}

        if self.uses_memory_bank:
            # Softmax over every head output (the background too, when there is one), foreground kept.
            masks = region_masks(self.region_source(output).detach())[
                :, : self.net.num_classes
            ]  # (B, C, h, w)
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
        return {
            "loss": loss,
            **step_output,
            "cams": self.cam_maps(output).detach(),
            "logits": output.logits.detach(),
        }

    def group_lr_multipliers(self) -> dict[str, float]:
        """The configured multipliers, the aggregation groups taking those of ``aggregation_lr``'s source."""
        source = self.hparams.aggregation_lr
        return {
            **self.lr_multipliers,
            "aggregation_weight": self.lr_multipliers[f"{source}_weight"],
            "aggregation_bias": self.lr_multipliers[f"{source}_bias"],
        }


__all__ = ["RCALitModule"]

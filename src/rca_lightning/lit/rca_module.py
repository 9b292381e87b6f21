"""LightningModule that trains the RCA CAM classifier (or the plain CAM baseline with RCA switched off)."""

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning import Callback

from rca_lightning.callbacks import MemoryBankCallback
from rca_lightning.lit.training_settings import TrainingSettings
from rca_lightning.lit.wsss_method import WSSSMethod
from rca_lightning.losses import SemanticContrastLoss
from rca_lightning.memory import RegionalMemoryBank, masked_average_pool, region_masks
from rca_lightning.models import RCANet, RCAOutput
from rca_lightning.utils.errors import InvalidSetting


class RCALitModule(WSSSMethod):
    """RCA classifier: multilabel soft-margin losses on both heads plus the semantic contrast.

    The regional memory bank's life cycle (enqueue after each step, prototypes at each epoch start,
    contrast on from its start epoch) is driven by :class:`rca_lightning.callbacks.MemoryBankCallback`,
    which the module attaches itself (``configure_callbacks``) when it uses the bank; its state lives in
    ``memory_bank``'s buffers, so checkpoints and device moves carry it. Under DDP the callback gathers
    every rank's regions and each rank applies the same update, which keeps the banks identical without
    sending the whole bank every step: the DDP trainer configs turn off DDP's broadcast of rank zero's
    buffers before every forward (``forward_sync_buffers: false``, ``conf/trainer/ddp.yaml``).

    Validation metrics are torchmetrics objects, summed over ranks when computed; with a validation
    sampler that repeats no image (``VOCDataModule`` uses one under DDP) every image counts exactly once.

    Args:
        net: the classifier network.
        memory_bank: the regional memory bank, ``dim == net.embedding_dim``.
        contrast_loss: the semantic contrast loss.
        optimizer: partial optimiser (e.g. ``SGD`` with its base ``lr``); receives the parameter groups.
        class_names: foreground class names, for logging.
        **settings: the training settings by name, :attr:`settings_type`'s fields (``contrast_weight=0.01``,
            ``lr_schedule="step"``...; see :class:`~rca_lightning.lit.training_settings.TrainingSettings`).

    Attributes:
        settings: the training settings, also the module's hyper-parameters (with ``class_names``).
    """

    settings_type: ClassVar[type[TrainingSettings]] = TrainingSettings

    def __init__(
        self,
        net: RCANet,
        memory_bank: RegionalMemoryBank,
        contrast_loss: SemanticContrastLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        class_names: Sequence[str],
        **settings: Any,
    ) -> None:
        chosen = self.settings_type(**settings)
        super().__init__(num_classes=net.num_classes, optimizer=optimizer, settings=chosen)
        if memory_bank.dim != net.embedding_dim:
            raise InvalidSetting(
                f"memory_bank.dim: expected net.embedding_dim ({net.embedding_dim}), got {memory_bank.dim}"
            )
        if len(class_names) != net.num_classes:
            raise InvalidSetting(
                f"class_names: expected net.num_classes ({net.num_classes}) names, got {len(class_names)}"
            )
        # Only plain values go into the checkpoint's hyperparameters, so it loads with weights_only=True.
        self.save_hyperparameters({"class_names": list(class_names), **asdict(chosen)})
        self.net = net
        self.memory_bank = memory_bank
        self.contrast_loss = contrast_loss
        self.class_names = list(class_names)
        # Set each epoch by MemoryBankCallback; a plain attribute because it follows from the epoch.
        self.contrast_active = False

    @property
    def uses_memory_bank(self) -> bool:
        """Whether region embeddings are collected at all (the plain CAM baseline skips that work)."""
        return self.settings.use_contrast or self.net.aggregation

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
                contrast_start_epoch=self.settings.contrast_start_epoch,
                prototype_start_epoch=self.settings.prototype_start_epoch,
                log_fill=self.settings.log_memory_fill,
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
            loss = loss + self.settings.coarse_loss_weight * losses["coarse"]
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
            confident = present & (torch.sigmoid(output.logits.detach()) > self.settings.confidence_threshold)
            step_output = {"region_embeddings": bank_regions.detach(), "region_confident": confident}

            if self.settings.use_contrast and self.contrast_active:
                image_index, class_index = present.nonzero(as_tuple=True)
                losses["contrast"] = self.contrast_loss(
                    projected_regions[image_index, class_index],
                    class_index,
                    image_index,
                    self.memory_bank.queue,
                    self.memory_bank.valid_slots(),
                )
                loss = loss + self.settings.contrast_weight * losses["contrast"]

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


__all__ = ["RCALitModule"]

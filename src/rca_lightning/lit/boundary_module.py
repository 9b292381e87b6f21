"""LightningModule of IRN's boundary network: trained with the affinity loss on relation labels, and the
boundary maps it predicts for the random walk."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning import LightningModule

from rca_lightning.lit.optimization import PolyScheduleLength, poly_schedule
from rca_lightning.losses.affinity_loss import affinity_loss
from rca_lightning.models.boundary_net import BoundaryNet
from rca_lightning.utils.pixel_paths import scaled_size
from rca_lightning.utils.setting_ranges import MAX_RADIUS, MAX_SCALE, number_in_range


class BoundaryLitModule(PolyScheduleLength, LightningModule):
    """Trains a :class:`BoundaryNet` from relation labels (the batch's ``mask``: class + 1, 0 background,
    255 undecided; ``refine=ir_labels``), and predicts boundary probabilities.

    Training: the labels are brought to the network's stride 4 (nearest), the boundary probabilities are the
    sigmoid of the logits, and the loss is IRN's affinity loss over the pixel pairs within ``radius``
    (logged with its three terms). Prediction (``predict_step``): the mean of the logits of each image and
    of its mirror image (flipped back), through the sigmoid, at stride 4 of the image's own size.

    ``image_scale`` resizes every image (bilinear; labels nearest) before the network, in training and
    prediction, so the maps are at stride 4 of the scaled image. IRN's is 1 (VOC objects span tens of
    stride-4 cells); on small images an object is a few cells wide and a one-cell boundary eats it.

    Args:
        net: the boundary network.
        optimizer: partial optimiser holding the base lr; receives the trainable parameters (the backbone
            is frozen).
        radius: pairs with ``dy^2 + dx^2 < radius^2`` at stride 4 (IRN in training: 10).
        poly_power: exponent of the per-step poly schedule over the run.
        image_scale: the factor images are resized by before the network (IRN: 1).
    """

    def __init__(
        self,
        net: BoundaryNet,
        optimizer: Callable[..., torch.optim.Optimizer],
        radius: int = 10,
        poly_power: float = 0.9,
        image_scale: float = 1.0,
    ) -> None:
        super().__init__()
        number_in_range("radius", radius, 1, MAX_RADIUS, integer=True)
        number_in_range("image_scale", image_scale, 0.0, MAX_SCALE, above_minimum=True)
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.optimizer_factory = optimizer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, ceil(H s / 4), ceil(W s / 4)) boundary logits (s: ``image_scale``)."""
        return self.net(self.scaled(images))

    def scaled(self, images: torch.Tensor) -> torch.Tensor:
        """Images resized by ``image_scale`` to ``scaled_size`` (bilinear)."""
        size = scaled_size(images.shape[-2:], self.hparams.image_scale)
        if size == tuple(images.shape[-2:]):
            return images
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["mask"]  # (B, 3, H, W), (B, H, W)
        logits = self(images)
        strided = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
        loss, terms = affinity_loss(torch.sigmoid(logits), strided, radius=self.hparams.radius)
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value, batch_size=batch_size)
        return loss

    @torch.no_grad()
    def boundary_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, ceil(H / 4), ceil(W / 4)) probabilities from the image and its mirror."""
        logits = self(images) + self(images.flip(-1)).flip(-1)
        return torch.sigmoid(logits / 2)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"image_id": batch["image_id"], "boundary": self.boundary_probabilities(batch["image"]).cpu()}

    def configure_optimizers(self) -> dict:
        parameters = [parameter for parameter in self.net.parameters() if parameter.requires_grad]
        optimizer = self.optimizer_factory(parameters)
        return {"optimizer": optimizer, "lr_scheduler": poly_schedule(optimizer, self.hparams.poly_power)}


__all__ = ["BoundaryLitModule"]

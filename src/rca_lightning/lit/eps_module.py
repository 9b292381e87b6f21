"""EPS and RCA on EPS: the classifier with a background channel, trained with saliency maps.

EPS ("Railroad is not a Train", Lee et al., CVPR 2021) adds a background map to the C class maps and
supervises the softmax over the C + 1 maps with a saliency map
(:class:`rca_lightning.losses.EPSSaliencyLoss`).
RCA's headline results are RCA on EPS. Here both are :class:`RCALitModule` with a network built with
``background_channel=True``: with contrast and aggregation off it is EPS (as plain CAM is RCA with them
off); with them on it is RCA on EPS.

Where RCA attaches to EPS (the paper does not say; this project's choice, ``conf/model/rca_eps.yaml``):
the semantic aggregation sits between the backbone and EPS's C + 1 classifier, so the classifier sees
the fused features; the memory bank holds the C foreground classes, with class regions from the
foreground channels of the softmax over all C + 1 maps (background included, so a pixel EPS calls
background is in no class's region). The regions come from a coarse C + 1 head on the raw features
(trained with the same classification and saliency losses at ``coarse_loss_weight``), as in RCA, so that
the regions do not depend on the aggregation they feed; ``net.coarse_head=false`` takes them from the
final classifier instead (one head, no coarse losses).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rca_lightning.lit.rca_module import RCALitModule
from rca_lightning.lit.training_settings import TrainingSettings
from rca_lightning.losses import EPSSaliencyLoss, SemanticContrastLoss
from rca_lightning.memory import RegionalMemoryBank
from rca_lightning.models import RCANet, RCAOutput
from rca_lightning.utils.errors import InvalidSetting


@dataclass(frozen=True, kw_only=True)
class EPSTrainingSettings(TrainingSettings):
    """RCA's :class:`~rca_lightning.lit.training_settings.TrainingSettings` and EPS's own.

    Args:
        saliency_loss_weight: weight of the saliency loss (1 in EPS).
        pseudo_background_threshold: the constant background score of EPS's pseudo masks (0.20): the
            ``rca-pseudo`` setting this method's CAMs are meant for.
        pseudo_crf: refine EPS's pseudo masks with the dense CRF (EPS: no).
    """

    saliency_loss_weight: float = 1.0
    pseudo_background_threshold: float = 0.2
    pseudo_crf: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.pseudo_background_threshold <= 1.0:
            raise InvalidSetting(
                "model.pseudo_background_threshold: expected a score in [0, 1], "
                f"got {self.pseudo_background_threshold}"
            )


class EPSLitModule(RCALitModule):
    """EPS / RCA-on-EPS classifier: RCA's losses on the C foreground scores plus EPS's saliency loss.

    Training batches carry ``saliency`` (B, H, W) in [0, 1] (the module asks the datamodule for it). The
    saliency loss applies to the class heads' C + 1 maps and, when the network has one, to the coarse
    head's (weighted by ``coarse_loss_weight`` like its classification loss). ``val/loss`` is the
    classification part only (validation images need no saliency map).

    Args:
        net: an :class:`RCANet` built with ``background_channel=True``.
        memory_bank, contrast_loss, optimizer, class_names: as :class:`RCALitModule`.
        saliency_loss: the EPS saliency loss (tau, lambda).
        **settings: :class:`EPSTrainingSettings`'s fields by name (RCA's training settings and EPS's).
    """

    needs_saliency = True
    settings_type = EPSTrainingSettings
    settings: EPSTrainingSettings

    def __init__(
        self,
        net: RCANet,
        memory_bank: RegionalMemoryBank,
        contrast_loss: SemanticContrastLoss,
        saliency_loss: EPSSaliencyLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        class_names: Sequence[str],
        **settings: Any,
    ) -> None:
        if not getattr(net, "background_channel", False):
            raise InvalidSetting(
                "model.net.background_channel: EPS needs the background map; expected true, got false"
            )
        super().__init__(net, memory_bank, contrast_loss, optimizer, class_names, **settings)
        self.saliency_loss = saliency_loss

    def cam_maps(self, output: RCAOutput) -> torch.Tensor:
        """Softmax over the C + 1 maps, background dropped: (B, C, h, w) in [0, 1] (EPS's inference)."""
        return output.cams.softmax(dim=1)[:, : self.net.num_classes]

    def training_losses(self, output: RCAOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Classification (RCA's) plus the saliency loss of the class heads and the coarse head."""
        loss, losses = super().training_losses(output, batch)
        if "saliency" not in batch:
            raise InvalidSetting(
                "data.saliency_dir: EPS trains with saliency maps, but the training batch has none"
            )
        labels, saliency = batch["labels"], batch["saliency"]  # (B, C), (B, H, W)
        weight = self.settings.saliency_loss_weight
        losses["saliency"] = self.saliency_loss(output.cams, labels, saliency)
        loss = loss + weight * losses["saliency"]
        if output.coarse_cams is not None:
            losses["coarse_saliency"] = self.saliency_loss(output.coarse_cams, labels, saliency)
            loss = loss + weight * self.settings.coarse_loss_weight * losses["coarse_saliency"]
        return loss, losses

    def validation_loss(self, output: RCAOutput, batch: dict) -> torch.Tensor:
        """The classification losses only: validation images have no saliency maps."""
        return super().training_losses(output, batch)[0]

    @property
    def pseudo_mask_settings(self) -> dict[str, float | bool]:
        """EPS's pseudo masks: a constant background score, no CRF unless ``pseudo_crf``."""
        return {
            "background_threshold": float(self.settings.pseudo_background_threshold),
            "crf": bool(self.settings.pseudo_crf),
        }


__all__ = ["EPSLitModule", "EPSTrainingSettings"]

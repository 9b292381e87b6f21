"""The settings of the CAM methods: one dataclass each, filled from the flat ``model.*`` keys.

:class:`MethodSettings` is what every :class:`~rca_lightning.lit.WSSSMethod` trains and validates with (lr
multipliers, schedule, CAM threshold sweep); :class:`TrainingSettings` adds what RCA and EPS share.
:class:`~rca_lightning.lit.RCALitModule` and :class:`~rca_lightning.lit.EPSLitModule` take their parts (the
network, the memory bank, the losses, the optimiser) by name and every other keyword argument into their
``settings_type``: ``rca-train model.contrast_weight=0.02`` and ``RCALitModule(..., contrast_weight=0.02)``
both set ``module.settings.contrast_weight``; the override check
(:mod:`rca_lightning.utils.settings_check`) reads their types from ``settings_type``. The settings are plain
values, so they are the module's hyper-parameters as they are (a checkpoint of them loads with
``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rca_lightning.utils.errors import InvalidSetting

# Learning-rate multipliers of the public code: pretrained weights 1x, their biases 2x, new layers 10x / 20x.
DEFAULT_LR_MULTIPLIERS = {"backbone_weight": 1.0, "backbone_bias": 2.0, "new_weight": 10.0, "new_bias": 20.0}
# Whose multipliers the aggregation layers' parameter groups take.
AGGREGATION_LR_SOURCES = ("new", "backbone")
LR_SCHEDULES = ("step", "poly")


@dataclass(frozen=True, kw_only=True)
class MethodSettings:
    """The optimiser, schedule and validation settings of a :class:`~rca_lightning.lit.WSSSMethod`.

    Args:
        lr_multipliers: multiplier of the base lr of every parameter group of ``net.parameter_groups()``
            (a method may complete them: :attr:`group_lr_multipliers`).
        bias_weight_decay: apply the optimiser's weight decay to the ``*_bias`` groups too (biases and
            normalisation parameters), as the public code does; False leaves them undecayed.
        lr_schedule: ``"step"`` (x ``lr_gamma`` after each of ``lr_milestone_epochs``, RCA's) or ``"poly"``
            (``(1 - step / total) ** poly_power`` every optimiser step, EPS's).
        lr_milestone_epochs: epochs after which the lr is multiplied by ``lr_gamma`` (``"step"``).
        lr_gamma: the decay factor (``"step"``).
        poly_power: exponent of the ``"poly"`` schedule.
        cam_thresholds: (start, stop, step) of the background-threshold sweep for val CAM mIoU.
    """

    lr_multipliers: dict[str, float] | None = None
    bias_weight_decay: bool = False
    lr_schedule: str = "step"
    lr_milestone_epochs: Sequence[int] = (5, 10)
    lr_gamma: float = 0.1
    poly_power: float = 0.9
    cam_thresholds: Sequence[float] = (0.0, 0.6, 0.01)

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise InvalidSetting(
                f"lr_schedule: expected one of {list(LR_SCHEDULES)}, got '{self.lr_schedule}'"
            )
        start, stop, step = self.cam_thresholds
        if not step > 0 or stop < start:
            raise InvalidSetting(
                f"cam_thresholds: expected (start, stop, step) with step > 0 and stop >= start, "
                f"got {list(self.cam_thresholds)}"
            )

    @property
    def group_lr_multipliers(self) -> dict[str, float]:
        """The lr multiplier of every parameter group."""
        return dict(self.lr_multipliers or {})


@dataclass(frozen=True, kw_only=True)
class TrainingSettings(MethodSettings):
    """Settings of the CAM classifiers' training (RCA, plain CAM, and the part EPS shares with them): those
    of :class:`MethodSettings` and

    Args:
        use_contrast: add the semantic contrast term (once the memory-bank callback switches it on).
        contrast_weight: weight of the contrast term (0.01 in the public code).
        coarse_loss_weight: weight of the coarse head's loss (0.4).
        confidence_threshold: a present class's region enters the bank when sigmoid(score) exceeds this (0.7).
        aggregation_lr: the aggregation layers train with the ``"new"`` layers' multipliers (10x / 20x) or
            the ``"backbone"``'s (1x / 2x, the public code's, where only ``extra*`` layers get 10x / 20x).
        contrast_start_epoch: first epoch (0-based) with the contrast term (2 in the public code).
        prototype_start_epoch: first epoch whose start recomputes the k-means prototypes (1).
        log_memory_fill: log each class's fraction of written bank slots at every epoch end.

    Here ``lr_multipliers`` are the ``backbone_*`` and ``new_*`` groups' over :data:`DEFAULT_LR_MULTIPLIERS`;
    the ``aggregation_*`` groups follow ``aggregation_lr``.
    """

    use_contrast: bool = True
    contrast_weight: float = 0.01
    coarse_loss_weight: float = 0.4
    confidence_threshold: float = 0.7
    aggregation_lr: str = "new"
    contrast_start_epoch: int = 2
    prototype_start_epoch: int = 1
    log_memory_fill: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.aggregation_lr not in AGGREGATION_LR_SOURCES:
            raise InvalidSetting(
                f"aggregation_lr: expected one of {list(AGGREGATION_LR_SOURCES)}, got '{self.aggregation_lr}'"
            )
        aggregation_keys = sorted(key for key in self.lr_multipliers or {} if key.startswith("aggregation_"))
        if aggregation_keys:
            raise InvalidSetting(
                f"lr_multipliers: {aggregation_keys} are set by aggregation_lr ('new' or 'backbone'), "
                "not given directly"
            )

    @property
    def group_lr_multipliers(self) -> dict[str, float]:
        """The lr multiplier of every parameter group: the defaults, the given ones over them, and the
        aggregation groups with those of ``aggregation_lr``'s source."""
        multipliers = {**DEFAULT_LR_MULTIPLIERS, **(self.lr_multipliers or {})}
        source = self.aggregation_lr
        return {
            **multipliers,
            "aggregation_weight": multipliers[f"{source}_weight"],
            "aggregation_bias": multipliers[f"{source}_bias"],
        }


__all__ = ["DEFAULT_LR_MULTIPLIERS", "MethodSettings", "TrainingSettings"]

"""The optimiser set-up both LightningModules share: parameter groups with lr multipliers, and torch's poly
schedule stepped every optimiser step over the run's length."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import PolynomialLR


def grouped_optimizer(
    groups: dict[str, list[torch.nn.Parameter]],
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    multipliers: dict[str, float],
    bias_weight_decay: bool = False,
) -> torch.optim.Optimizer:
    """One optimiser over named parameter groups, each at ``multipliers[name]`` x the base lr.

    Args:
        groups: ``net.parameter_groups()``: name -> parameters (empty groups are left out).
        optimizer_factory: partial optimiser holding the base lr (e.g. ``SGD(lr=..., momentum=...)``).
        multipliers: lr multiplier of every group name.
        bias_weight_decay: keep the weight decay on the ``*_bias`` groups (biases and norm parameters);
            by default they get none.
    """
    unknown = set(groups) - set(multipliers)
    if unknown:
        raise ValueError(f"lr_multipliers has no entry for parameter groups {sorted(unknown)}")
    optimizer = optimizer_factory(
        [{"params": params, "name": name} for name, params in groups.items() if params]
    )
    for group in optimizer.param_groups:
        group["lr"] *= multipliers[group["name"]]
        if group["name"].endswith("_bias") and not bias_weight_decay:
            group["weight_decay"] = 0.0
    return optimizer


def poly_schedule(optimizer: torch.optim.Optimizer, power: float) -> dict:
    """Lightning's scheduler entry of torch's ``PolynomialLR`` (``base lr x (1 - step / total) ** power``),
    stepped every optimiser step. Its ``total_iters`` is a placeholder until training starts
    (:class:`PolyScheduleLength` sets the run's optimiser steps)."""
    scheduler = PolynomialLR(optimizer, total_iters=1, power=power)
    return {"scheduler": scheduler, "interval": "step"}


class PolyScheduleLength:
    """LightningModule mixin: when training starts, every ``PolynomialLR`` of the run gets the run's
    optimiser steps (``trainer.estimated_stepping_batches``) as ``total_iters``.

    Asked then, not in ``configure_optimizers``: asking while the optimisers are configured builds the train
    loader before a checkpoint's loop state is restored, and Lightning then never restores the loader's
    position (Lightning issue #20550), so a resumed run would not continue exactly. The schedule's first
    step comes after this, and the factor at step 0 is 1 whatever the total.
    """

    def on_train_start(self) -> None:
        super().on_train_start()
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, PolynomialLR):
                config.scheduler.total_iters = int(self.trainer.estimated_stepping_batches)


__all__ = ["PolyScheduleLength", "grouped_optimizer", "poly_schedule"]

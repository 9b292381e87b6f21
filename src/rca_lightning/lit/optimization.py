"""The optimiser set-up both LightningModules share: parameter groups with lr multipliers, and the poly
schedule stepped every optimiser step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning import LightningModule


def poly_lr_factor(step: int, total_steps: int, power: float) -> float:
    """The poly schedule's multiplier of the base learning rate: ``(1 - step / total_steps) ** power``."""
    return (1.0 - min(step, total_steps) / max(1, total_steps)) ** power


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


def poly_schedule(optimizer: torch.optim.Optimizer, module: LightningModule, power: float) -> dict:
    """Lightning's scheduler entry of the poly schedule over the run's optimiser steps, stepped every step.

    The total is read from ``trainer.estimated_stepping_batches`` at the first step, not here: asking while
    the optimisers are configured builds the train loader before a checkpoint's loop state is restored, and
    Lightning then never restores the loader's position (Lightning issue #20550), so a resumed run would
    not continue exactly.
    """

    def factor(step: int) -> float:  # 1 at step 0, before the trainer is asked
        if step == 0:
            return 1.0
        return poly_lr_factor(step, int(module.trainer.estimated_stepping_batches), power)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"scheduler": scheduler, "interval": "step"}


__all__ = ["grouped_optimizer", "poly_lr_factor", "poly_schedule"]

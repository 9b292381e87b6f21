"""Gathering per-image tensors of every DDP rank, padded to one size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning import LightningModule, Trainer


def train_batch_capacity(trainer: Trainer) -> int | None:
    """The train loader's batch size (every batch has at most this many images), or None if it has none.

    Lightning rebuilds the loader for DDP and may move the batch size into its batch sampler.
    """
    loader = trainer.train_dataloader
    batch_size = getattr(loader, "batch_size", None)
    if batch_size is None:
        batch_size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return batch_size


def gather_padded_batch(
    trainer: Trainer, pl_module: LightningModule, tensor: torch.Tensor, owner: str
) -> torch.Tensor:
    """``all_gather`` of a per-image tensor, zero-padded along the batch to the train loader's batch size.

    Every rank contributes the same shape (the collective needs it, and a short last batch on one rank must
    not shift the others), and the result is in rank-major order on every rank.

    Args:
        trainer: the running trainer.
        pl_module: the module whose ``all_gather`` is used.
        tensor: (B, ...) this rank's values; padded rows are zeros.
        owner: name used in the error message (the calling callback).

    Returns:
        (W * B_max, ...) every rank's rows, rank 0 first.
    """
    capacity = train_batch_capacity(trainer)
    batch_size = tensor.shape[0]
    if capacity is None or batch_size > capacity:
        raise ValueError(
            f"{owner}: under DDP the train DataLoader needs a fixed batch size >= the batch ({batch_size}), "
            f"got {capacity}"
        )
    padding = [0, 0] * (tensor.dim() - 1) + [0, capacity - batch_size]
    return pl_module.all_gather(F.pad(tensor, padding)).flatten(0, 1)


__all__ = ["gather_padded_batch", "train_batch_capacity"]

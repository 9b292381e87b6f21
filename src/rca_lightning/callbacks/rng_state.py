"""Random generator states in checkpoints, so a resumed run draws the numbers an uninterrupted one draws."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn


def collect_rng_states() -> dict:
    """This process's Python, NumPy, torch CPU (and CUDA) generator states, as plain values and tensors
    (loadable with ``torch.load(weights_only=True)``)."""
    # NumPy's legacy global generator is the one seed_everything seeds and libraries draw from.
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002
    states = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Set the generators to states returned by ``collect_rng_states``."""
    random.setstate(
        tuple(value if not isinstance(value, list) else tuple(value) for value in states["python"])
    )
    numpy_state = states["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RNGStateCallback(Callback):
    """Carries every rank's generator states in checkpoints and restores them when a run resumes.

    Lightning checkpoints hold the model, optimiser, loops and callback states but not the random
    generators, so a resumed run would augment and sample (the contrast mix-up) differently from an
    uninterrupted one. This callback's state is the list of every rank's states (gathered when the
    checkpoint is written; every rank takes part in writing it); on resume, rank r takes entry r.

    The states are restored when the checkpoint is loaded, before the train loader's iterator is made
    (its creation draws a seed, as it does at every epoch start of an uninterrupted run). A run resumed
    mid-epoch is restored once more when training starts: there the uninterrupted run made no iterator.
    """

    def __init__(self) -> None:
        self._loaded_states: dict | None = None

    def state_dict(self) -> dict:
        _, world_size = _world()
        states = collect_rng_states()
        if world_size == 1:
            return {"per_rank": [states]}
        gathered: list[dict | None] = [None] * world_size
        dist.all_gather_object(gathered, states)
        return {"per_rank": gathered}

    def load_state_dict(self, state_dict: dict) -> None:
        rank, world_size = _world()
        per_rank = state_dict["per_rank"]
        if len(per_rank) != world_size:
            rank_zero_warn(
                f"RNGStateCallback: the checkpoint holds generator states of {len(per_rank)} processes, this "
                f"run has {world_size}; the generators are not restored (the run continues, not exactly)"
            )
            return
        self._loaded_states = per_rank[rank]
        restore_rng_states(self._loaded_states)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._loaded_states is not None and trainer.fit_loop.restarted_mid_epoch:
            restore_rng_states(self._loaded_states)
        self._loaded_states = None


__all__ = ["RNGStateCallback", "collect_rng_states", "restore_rng_states"]

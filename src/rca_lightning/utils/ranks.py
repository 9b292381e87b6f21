"""The processes a CPU-bound stage shares its images with when launched by torchrun or srun.

The rank and world size come from the launcher's environment variables, read by Lightning's own cluster
environments (``TorchElasticEnvironment``: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``;
``SLURMEnvironment``: ``SLURM_PROCID``, ``SLURM_NTASKS``, the node list), so a stage sees the same ranks as a
Lightning trainer under the same launch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

Item = TypeVar("Item")


def launch_environment() -> ClusterEnvironment | None:
    """The launcher's environment (torchrun first, then srun), or None for a plain process."""
    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment()
    if SLURMEnvironment.detect():
        return SLURMEnvironment()
    return None


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a stage.

    Args:
        rank: this process's index, 0..world_size - 1.
        world_size: the number of processes.
        group: their gloo process group (None for one process).
        local_size: how many of them run on this machine (they share its CPUs).
    """

    rank: int = 0
    world_size: int = 1
    group: dist.ProcessGroup | None = None
    local_size: int = 1

    def cpus(self) -> int:
        """This process's share of the machine's CPUs (at least 1)."""
        return max(1, (os.cpu_count() or 1) // self.local_size)

    @property
    def is_main(self) -> bool:
        """Whether this process writes what is written once (summaries, reports)."""
        return self.rank == 0

    def shard(self, items: Sequence[Item]) -> list[Item]:
        """This rank's share of ``items``: every ``world_size``-th from ``rank`` (the shares are disjoint,
        cover ``items`` and differ in length by at most one)."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.group is not None:
            dist.barrier(group=self.group)

    def metric_sync(self) -> dict:
        """The torchmetrics arguments that sum a metric's states over these ranks at ``compute``."""
        return {"process_group": self.group, "sync_on_compute": self.group is not None}

    def agree(self, value: object) -> bool:
        """Whether every rank holds the same (picklable) ``value``."""
        if self.group is None:
            return True
        values: list[object] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.group)
        return all(other == values[0] for other in values)

    def sum(self, values: Sequence[int]) -> list[int]:
        """Integer ``values`` summed over ranks (exact: int64)."""
        tensor = torch.tensor(list(values), dtype=torch.int64)
        if self.group is not None:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return [int(value) for value in tensor]


def _processes_on_this_machine() -> int:
    """torchrun's ``LOCAL_WORLD_SIZE``, else SLURM's tasks per node (``2`` or ``2(x3)``), else 1."""
    for variable in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        count = re.match(r"\d+", os.environ.get(variable, ""))
        if count:
            return max(1, int(count.group()))
    return 1


@contextmanager
def stage_ranks() -> Iterator[Ranks]:
    """The ranks of this stage's processes (one process when not launched by torchrun or srun); every rank
    passes a final barrier before it returns, so what any rank wrote is there when the stage ends.

    The processes meet in the default process group, set up here when nothing set it up yet (gloo for CPU
    tensors, and NCCL for CUDA ones on a GPU machine, so a Lightning trainer later in the process takes it
    over as its own), or in a gloo group beside a trainer's NCCL-only group.
    """
    environment = launch_environment()
    if environment is None or environment.world_size() <= 1:
        yield Ranks()
        return
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", environment.main_address)
        os.environ.setdefault("MASTER_PORT", str(environment.main_port))
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=environment.global_rank(), world_size=environment.world_size())
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), _cpu_group(), _processes_on_this_machine())
    yield ranks
    ranks.barrier()


@lru_cache(maxsize=1)
def _cpu_group() -> dist.ProcessGroup:
    """The default group when it has a CPU backend, else one gloo group beside it (made once: every rank
    creates it at its first stage)."""
    if "gloo" in str(dist.get_backend()):
        return dist.group.WORLD
    return dist.new_group(backend="gloo")


__all__ = ["Ranks", "launch_environment", "stage_ranks"]

"""The processes a CPU-bound stage shares its images with when launched by torchrun or srun.

The rank and world size come from the launcher's environment variables, read by Lightning's own cluster
environments (``TorchElasticEnvironment``: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``;
``SLURMEnvironment``: ``SLURM_PROCID``, ``SLURM_NTASKS``, the node list), so a stage sees the same ranks as a
Lightning trainer under the same launch.

Every rank tells the same story: checks run under :meth:`Ranks.agree_outcome` fail on every rank with the
same one line when they fail on any (the outcome is shared before anyone waits at a barrier), and a barrier
waits at most ``barrier_timeout_s`` (a setting of every stage that uses ranks), then stops in one line naming
the stage and the ranks that did not arrive.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import TypeVar

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from rca_lightning.utils.errors import InvalidSetting, RanksOutOfStep, UserError

Item = TypeVar("Item")
# torch.distributed's own default for a collective (30 minutes): the slowest rank's share of a CPU stage.
DEFAULT_BARRIER_TIMEOUT_S = 1800.0


def launch_environment() -> ClusterEnvironment | None:
    """The launcher's environment (torchrun first, then srun), or None for a plain process."""
    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment()
    if SLURMEnvironment.detect():
        return SLURMEnvironment()
    return None


def launch_is_main() -> bool:
    """Whether this process is the first of its launch, known before any process group exists: rank 0 of
    torchrun / srun, or the process Lightning's own launcher (``trainer.devices > 1``, no torchrun) starts the
    others from (they get ``LOCAL_RANK`` / ``NODE_RANK`` above 0). A plain process is its launch's first."""
    environment = launch_environment()
    if environment is not None:
        return environment.global_rank() == 0
    return all(os.environ.get(variable, "0") == "0" for variable in ("LOCAL_RANK", "NODE_RANK"))


def launch_id() -> str:
    """A name that every process of this launch shares and no other launch running now has: the
    torchrun agent's process id (the parent of its workers), SLURM's job and step ids, else this process's
    id. It tells apart runs that start in the same second (``hydra.run.dir``)."""
    if TorchElasticEnvironment.detect():
        return f"torchrun{os.getppid()}"
    if SLURMEnvironment.detect():
        return f"slurm{os.environ.get('SLURM_JOB_ID', '')}.{os.environ.get('SLURM_STEP_ID', '0')}"
    return f"pid{os.getpid()}"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a stage.

    Args:
        rank: this process's index, 0..world_size - 1.
        world_size: the number of processes.
        group: their gloo process group (None for one process).
        local_size: how many of them run on this machine (they share its CPUs).
        stage: the console script they run, named when they fall out of step.
        barrier_timeout_s: how long a barrier waits for every rank.
    """

    rank: int = 0
    world_size: int = 1
    group: dist.ProcessGroup | None = None
    local_size: int = 1
    stage: str = "this stage"
    barrier_timeout_s: float = DEFAULT_BARRIER_TIMEOUT_S

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
        """Wait until every rank got here; RanksOutOfStep naming the stage and the ranks that did not arrive
        within ``barrier_timeout_s`` (gloo's monitored barrier: rank 0 collects every rank)."""
        if self.group is None:
            return
        timeout = timedelta(seconds=self.barrier_timeout_s)
        try:
            dist.monitored_barrier(group=self.group, timeout=timeout, wait_all_ranks=True)
        except RuntimeError as error:
            raise RanksOutOfStep(self._out_of_step(str(error))) from error

    def _out_of_step(self, error: str) -> str:
        """The line of a barrier that timed out: rank 0 knows which ranks did not arrive (torch names them
        in its message); the others know that rank 0 did not let them pass."""
        waited = f"within barrier_timeout_s={self.barrier_timeout_s:g}"
        listed = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", error)
        if self.rank == 0 and listed:
            missing = [int(rank) for rank in re.findall(r"\d+", listed.group(1))]
            return f"{self.stage}: ranks {missing} of {self.world_size} did not reach the barrier {waited}"
        return (
            f"{self.stage}: rank {self.rank} waited at the barrier and rank 0 did not let it pass {waited} "
            "(rank 0, or a rank that rank 0 names, did not arrive)"
        )

    @contextmanager
    def agree_outcome(self) -> Iterator[None]:
        """Run a block of checks on every rank and make its outcome every rank's, before anyone waits at a
        barrier: when it fails on any rank, every rank raises the first failing rank's error, its message
        naming that rank (a user error of the same kind, so the same one line everywhere; a bug stays a
        traceback on its rank and is a RuntimeError on the others). The block must not wait for other ranks;
        its end is a barrier (every rank has run it).
        """
        if self.group is None:
            yield
            return
        failure: Exception | None = None
        try:
            yield
        except Exception as error:  # noqa: BLE001 - every failure is shared, then raised again below
            failure = error
        self.barrier()  # a rank stuck in the block is named after barrier_timeout_s
        outcomes: list[tuple[str, str] | None] = [None] * self.world_size
        dist.all_gather_object(outcomes, _outcome(failure), group=self.group)
        failed = next(((rank, outcome) for rank, outcome in enumerate(outcomes) if outcome), None)
        if failed is None:
            return
        rank, (kind, message) = failed
        if kind not in _USER_ERRORS:
            if rank == self.rank and failure is not None:
                raise failure
            raise RuntimeError(f"{self.stage}: rank {rank} of {self.world_size} failed: {message}")
        agreed = _USER_ERRORS[kind](f"{message} (rank {rank} of {self.world_size})")
        if failure is not None:
            raise agreed from failure
        raise agreed

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


def _user_error_kinds(kind: type[UserError] = UserError) -> dict[str, type[UserError]]:
    """Every user error class by name (what a rank's failure is raised as on the others)."""
    kinds = {kind.__name__: kind}
    for subclass in kind.__subclasses__():
        kinds.update(_user_error_kinds(subclass))
    return kinds


_USER_ERRORS = _user_error_kinds()


def _outcome(failure: Exception | None) -> tuple[str, str] | None:
    """What a rank shares of its checks: None when they passed, else (kind, message); kind is the user error's
    class name, or ``bug`` for anything else."""
    if failure is None:
        return None
    if isinstance(failure, UserError) and type(failure).__name__ in _USER_ERRORS:
        return type(failure).__name__, str(failure)
    return "bug", f"{type(failure).__name__}: {failure}"


@contextmanager
def stage_ranks(
    stage: str = "this stage", barrier_timeout_s: float = DEFAULT_BARRIER_TIMEOUT_S
) -> Iterator[Ranks]:
    """The ranks of this stage's processes (one process when not launched by torchrun or srun); every rank
    passes a final barrier before it returns, so what any rank wrote is there when the stage ends.

    Args:
        stage: the console script, named when the ranks fall out of step.
        barrier_timeout_s: how long each barrier waits (the stage's ``barrier_timeout_s`` setting).

    The processes meet in the default process group, set up here when nothing set it up yet (gloo for CPU
    tensors, and NCCL for CUDA ones on a GPU machine, so a Lightning trainer later in the process takes it
    over as its own), or in a gloo group beside a trainer's NCCL-only group.
    """
    if not 0 < barrier_timeout_s < math.inf:
        raise InvalidSetting(f"barrier_timeout_s={barrier_timeout_s}: expected a number of seconds above 0")
    environment = launch_environment()
    if environment is None or environment.world_size() <= 1:
        yield Ranks(stage=stage, barrier_timeout_s=float(barrier_timeout_s))
        return
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", environment.main_address)
        os.environ.setdefault("MASTER_PORT", str(environment.main_port))
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=environment.global_rank(), world_size=environment.world_size())
    ranks = Ranks(
        dist.get_rank(),
        dist.get_world_size(),
        _cpu_group(),
        _processes_on_this_machine(),
        stage,
        float(barrier_timeout_s),
    )
    yield ranks
    ranks.barrier()


@lru_cache(maxsize=1)
def _cpu_group() -> dist.ProcessGroup:
    """The default group when it has a CPU backend, else one gloo group beside it (made once: every rank
    creates it at its first stage)."""
    if "gloo" in str(dist.get_backend()):
        return dist.group.WORLD
    return dist.new_group(backend="gloo")


__all__ = [
    "DEFAULT_BARRIER_TIMEOUT_S",
    "Ranks",
    "launch_environment",
    "launch_id",
    "launch_is_main",
    "stage_ranks",
]

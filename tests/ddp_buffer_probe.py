"""Test helper (spawned by tests/test_ddp_buffers.py, imports torch only): one DDP training step of a module
whose buffer each rank sets to a value of its own; the buffer after the step goes to ``bank<rank>.pt``."""

from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def train_one_step(rank: int, world_size: int, folder: Path, settings: dict) -> None:
    init = f"file://{folder / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    try:
        module = nn.Linear(2, 1)
        module.register_buffer("bank", torch.zeros(3))
        model = DistributedDataParallel(module, **settings)
        module.bank.fill_(rank + 1.0)  # each rank's own state, as after its own enqueue
        model(torch.ones(1, 2)).sum().backward()
        torch.save(module.bank, folder / f"bank{rank}.pt")
    finally:
        dist.destroy_process_group()

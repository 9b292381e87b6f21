"""What the DDP trainer configs rely on (``conf/trainer/ddp*.yaml``): with their strategy's settings, torch's
DDP leaves every rank's buffers as they are in a training forward, so MemoryBankCallback alone keeps the
memory banks in step, and no 10-40 MB bank is broadcast from rank 0 every step."""

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONFIG_DIR
from tests.ddp_buffer_probe import train_one_step

WORLD_SIZE = 2


def ddp_settings(trainer: str) -> dict:
    """The DDP arguments of ``trainer=<trainer>``'s strategy (what Lightning's DDPStrategy hands DDP)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        strategy = OmegaConf.to_container(compose("train", overrides=[f"trainer={trainer}"]).trainer.strategy)
    assert strategy.pop("_target_") == "lightning.pytorch.strategies.DDPStrategy"
    return strategy


@pytest.mark.parametrize("trainer", ["ddp", "ddp_cpu"])
@pytest.mark.slow
def test_ddp_keeps_each_ranks_buffers_in_a_training_forward(tmp_path, trainer):
    mp.spawn(train_one_step, args=(WORLD_SIZE, tmp_path, ddp_settings(trainer)), nprocs=WORLD_SIZE)
    for rank in range(WORLD_SIZE):
        assert torch.equal(torch.load(tmp_path / f"bank{rank}.pt"), torch.full((3,), rank + 1.0)), (
            f"rank {rank}'s buffer was overwritten by DDP with trainer={trainer}'s strategy"
        )

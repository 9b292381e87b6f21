"""Padding per-image tensors to the loader's batch size before all_gather (a short batch on one rank)."""

from types import SimpleNamespace

import pytest
import torch

from rca_lightning.callbacks import MemoryBankCallback
from rca_lightning.utils.distributed import gather_padded_batch


class TwoRanks:
    """Stands in for a LightningModule's all_gather over two ranks: rank 1 holds ``other``."""

    def __init__(self, other: torch.Tensor) -> None:
        self.other = other

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        assert tensor.shape == self.other.shape, "every rank must send the same shape"
        return torch.stack([tensor, self.other])  # (W, ...)


def trainer_with_batch_size(batch_size: int | None, sampler_batch_size: int | None = None) -> SimpleNamespace:
    loader = SimpleNamespace(
        batch_size=batch_size, batch_sampler=SimpleNamespace(batch_size=sampler_batch_size)
    )
    return SimpleNamespace(train_dataloader=loader)


def test_a_short_batch_is_zero_padded_and_ranks_are_concatenated_in_order():
    mine = torch.tensor([[1, 2], [3, 4]])  # (2, 2): a short last batch
    other_rank = torch.full((4, 2), 7)
    gathered = gather_padded_batch(trainer_with_batch_size(4), TwoRanks(other_rank), mine, "test")
    assert gathered.tolist() == [[1, 2], [3, 4], [0, 0], [0, 0]] + [[7, 7]] * 4


def test_the_batch_size_may_live_in_the_batch_sampler():
    gathered = gather_padded_batch(
        trainer_with_batch_size(None, 3), TwoRanks(torch.ones(3)), torch.ones(1), "x"
    )
    assert gathered.tolist() == [1, 0, 0, 1, 1, 1]


def test_a_batch_larger_than_the_loader_batch_size_is_an_error():
    with pytest.raises(ValueError, match=r"MemoryBankCallback: .*batch size >= the batch \(5\), got 4"):
        gather_padded_batch(
            trainer_with_batch_size(4), TwoRanks(torch.ones(4)), torch.ones(5), "MemoryBankCallback"
        )


def test_padded_regions_never_enter_the_bank():
    embeddings = torch.randn(2, 3, 4)  # (B, C, D)
    confident = torch.tensor([[True, False, True], [False, False, True]])
    other_rank = torch.cat([torch.randn(4, 3, 4), torch.ones(4, 3, 1)], dim=-1)  # all confident
    gathered, gathered_confident = MemoryBankCallback.gather_regions(
        trainer_with_batch_size(4), TwoRanks(other_rank), embeddings, confident
    )
    assert gathered.shape == (8, 3, 4) and torch.equal(gathered[:2], embeddings)
    assert gathered_confident[:2].tolist() == confident.tolist()
    assert not gathered_confident[2:4].any() and gathered_confident[4:].all()

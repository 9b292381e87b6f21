"""The evaluation sampler under DDP: every index exactly once over the ranks, none repeated, none left out."""

import pytest
from torch.utils.data import DistributedSampler

from rca_lightning.data.rank_share_sampler import RankShareSampler


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("size", [0, 1, 2, 5, 15, 16])
def test_each_rank_takes_every_world_size_th_index_from_its_rank(size, world_size):
    dataset = list(range(size))
    shares = [list(RankShareSampler(dataset, world_size, rank)) for rank in range(world_size)]
    for rank, share in enumerate(shares):
        assert share == [index for index in range(size) if index % world_size == rank]  # the definition
        assert len(RankShareSampler(dataset, world_size, rank)) == len(share)
    assert sorted(index for share in shares for index in share) == dataset  # once each, none missing
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_it_is_a_distributed_sampler_so_lightning_keeps_it():
    assert isinstance(RankShareSampler(range(3), 2, 1), DistributedSampler)


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError):
        RankShareSampler(range(3), 2, 2)

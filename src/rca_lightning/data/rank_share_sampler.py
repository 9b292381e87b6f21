"""This process's share of a dataset for evaluation under DDP: every index exactly once over all ranks."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class RankShareSampler(DistributedSampler):
    """Rank ``r`` of ``W`` takes the indices ``r, r + W, r + 2W, ...`` in order: no index repeated to even out
    the ranks (as ``DistributedSampler`` pads), none left out, so shares differ in length by at most one.

    A ``DistributedSampler`` so that Lightning keeps it (it puts its own in place of any other sampler under
    DDP). For evaluation only: in training, ranks with one batch fewer would wait for each other.

    Args:
        dataset: the dataset to share out (N items).
        num_replicas: W, the number of ranks.
        rank: r, this process's rank in [0, W).
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

"""Test helper (spawned by tests/test_average_precision.py): one rank of a two-process gloo group scores its
share of the images with the split-level metrics; what ``compute`` gives goes to ``rank<rank>.pt``."""

from pathlib import Path

import torch
import torch.distributed as dist

from rca_lightning.metrics import ClassImageCount, PresentClassAveragePrecision


def score_share(
    rank: int,
    world_size: int,
    folder: Path,
    shares: list[list[int]],
    scores: torch.Tensor,
    tags: torch.Tensor,
    masks: torch.Tensor,
) -> None:
    """Score ``shares[rank]`` of the N images: ``scores`` / ``tags`` (N, C), ``masks`` (N, H, W).

    The share is fed in batches of two, so a rank updates more than once (and one rank may have fewer).
    """
    dist.init_process_group(
        "gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank, world_size=world_size
    )
    try:
        average_precision = PresentClassAveragePrecision(tags.shape[1])
        images = ClassImageCount(tags.shape[1] + 1)
        mine = torch.tensor(shares[rank])
        for batch in mine.split(2):
            average_precision.update(scores[batch], tags[batch])
            images.update(masks[batch])
        result = average_precision.compute()
        torch.save({**result, "images": images.compute().clone()}, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()

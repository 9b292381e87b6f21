"""Which images a figure shows: a few that together cover as many classes as possible."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pick_figure_images(image_ids: Sequence[str], labels: np.ndarray, count: int) -> list[str]:
    """Up to ``count`` image ids chosen greedily to cover the most classes, images with several classes first.

    Each pick is the image that adds the most classes not shown yet; ties go to the image with more
    classes, then to the earlier one, so the choice is deterministic. Once every class present is
    shown, the richest remaining images follow.

    Args:
        image_ids: the N ids of the split.
        labels: (N, C) image-level tags (multi-hot; nonzero means present), aligned with ``image_ids``.
        count: how many images to show.

    Returns:
        The chosen ids in the order picked (the richest first).
    """
    if len(image_ids) != len(labels):
        raise ValueError(
            f"pick_figure_images: {len(image_ids)} image ids, {len(labels)} label rows; expected one per id"
        )
    tags = np.asarray(labels) > 0  # (N, C)
    tag_counts = tags.sum(1)  # (N,)
    available = np.ones(len(tags), bool)  # (N,)
    shown = np.zeros(tags.shape[1], bool)  # (C,)
    picked = []
    for _ in range(min(count, len(tags))):  # a handful of picks; each one is vectorised over the images
        new_classes = (tags & ~shown).sum(1)  # (N,)
        # Lexicographic (new classes, classes) as one integer; argmax takes the first of equal keys.
        key = np.where(available, new_classes * (tags.shape[1] + 1) + tag_counts, -1)
        best = int(key.argmax())
        picked.append(best)
        available[best] = False
        shown |= tags[best]
    return [image_ids[index] for index in picked]


__all__ = ["pick_figure_images"]

"""Inter-pixel geometry shared by IRN's affinity loss, boundary network and random walk: the stride-4 grid of
a (scaled) image, the neighbours within a radius, the straight path between two pixels, and maps shifted by an
offset."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def stride4_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """The boundary map's (h, w) of an (H, W) image: ``ceil(H / 4), ceil(W / 4)``."""
    return math.ceil(image_size[0] / 4), math.ceil(image_size[1] / 4)


def scaled_size(image_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) resized by ``scale``: ``round(H s), round(W s)``."""
    return round(image_size[0] * scale), round(image_size[1] * scale)


@lru_cache(maxsize=8)
def disc_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """Every (dy, dx) != (0, 0) with ``dy^2 + dx^2 < radius^2``, in row-major order."""
    return tuple(
        (dy, dx)
        for dy in range(-radius + 1, radius)
        for dx in range(-radius + 1, radius)
        if 0 < dy * dy + dx * dx < radius * radius
    )


@lru_cache(maxsize=256)
def path_offsets(dy: int, dx: int) -> tuple[tuple[int, int], ...]:
    """The pixels of the straight path from (0, 0) to (dy, dx), both ends included: the points ``t (dy, dx)``
    for ``t = k / n``, ``k = 0..n``, ``n = max(|dy|, |dx|)``, each rounded half up. Rounding a point does not
    depend on the direction, so the path from a to b and the path from b to a are the same pixels."""
    steps = max(abs(dy), abs(dx))
    points = {(0, 0)}
    for k in range(1, steps + 1):
        points.add((int(np.floor(dy * k / steps + 0.5)), int(np.floor(dx * k / steps + 0.5))))
    return tuple(sorted(points))


def shifted(values: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``values[..., y + dy, x + dx]`` at every (y, x) of the last two dimensions, ``fill`` where that is
    outside the map."""
    height, width = values.shape[-2:]
    out = torch.full_like(values, fill)
    ys, xs = slice(max(0, -dy), min(height, height - dy)), slice(max(0, -dx), min(width, width - dx))
    ys_src, xs_src = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    if ys.start < ys.stop and xs.start < xs.stop:
        out[..., ys, xs] = values[..., ys_src, xs_src]
    return out


@lru_cache(maxsize=8)
def half_disc_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """One offset of each pair of opposite offsets of :func:`disc_offsets`: ``dy > 0``, or ``dy == 0`` and
    ``dx > 0`` (each unordered pixel pair once)."""
    return tuple((dy, dx) for dy, dx in disc_offsets(radius) if dy > 0 or (dy == 0 and dx > 0))


__all__ = ["disc_offsets", "half_disc_offsets", "path_offsets", "shifted"]

"""Batched Lloyd k-means: many independent groups (one per class) clustered at once on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kmeans_init_indices(valid: Tensor, num_clusters: int, generator: torch.Generator | None = None) -> Tensor:
    """Random distinct initial centres per group, drawn among the group's valid points.

    The random keys are drawn on the generator's device (CPU for a default ``torch.Generator()``) and
    moved to ``valid``'s device, so a seed gives the same indices on every device.

    Args:
        valid: (G, N) bool, which points of each group may be used.
        num_clusters: K, the number of centres per group.
        generator: source of randomness; ``None`` uses a generator seeded with 0 (deterministic).

    Returns:
        (G, K) long point indices. Row g starts with min(K, valid[g].sum()) distinct valid indices in random
        order; the remaining entries point at invalid points and must be ignored (see ``batched_kmeans``).
    """
    if valid.dim() != 2:
        raise ValueError(f"kmeans_init_indices: valid must be (G, N), got shape {tuple(valid.shape)}")
    if num_clusters < 1:
        raise ValueError(f"kmeans_init_indices: num_clusters must be >= 1, got {num_clusters}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    num_groups, num_points = valid.shape
    random_keys = torch.rand(num_groups, num_points, generator=generator, device=generator.device)
    random_keys = random_keys.to(valid.device)  # (G, N) in [0, 1)
    # Invalid points get key 2 so they sort after every valid one.
    random_keys = torch.where(valid, random_keys, torch.full_like(random_keys, 2.0))
    order = torch.argsort(random_keys, dim=1, stable=True)  # (G, N)
    indices = order[:, :num_clusters]  # (G, min(K, N))
    if indices.shape[1] < num_clusters:
        padding = indices.new_zeros(num_groups, num_clusters - indices.shape[1])
        indices = torch.cat([indices, padding], dim=1)  # (G, K)
    return indices


def batched_kmeans(
    points: Tensor,
    valid: Tensor,
    num_clusters: int,
    num_iters: int = 10,
    generator: torch.Generator | None = None,
    init_indices: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd k-means run independently in every group, all groups in one set of tensor operations.

    Centre k of group g is valid when the group has more than k valid points; invalid centres are zeros and
    never receive points. Each iteration assigns every valid point to its nearest valid centre (ties go to
    the lowest centre index) and moves each centre to the mean of its points; a centre that receives no point
    keeps its previous position. Invalid points never influence anything (they are zeroed before use).

    Args:
        points: (G, N, D) points.
        valid: (G, N) bool mask of usable points.
        num_clusters: K.
        num_iters: number of Lloyd iterations.
        generator: randomness for the initial centres (ignored when ``init_indices`` is given).
        init_indices: optional (G, K) long initial centre indices, as returned by ``kmeans_init_indices``
            (the first min(K, n_valid) entries of each row must be distinct valid points).

    Returns:
        centres: (G, K, D) cluster centres, in ``points``' dtype and device.
        centre_valid: (G, K) bool.
    """
    if points.dim() != 3 or valid.shape != points.shape[:2]:
        raise ValueError(
            f"batched_kmeans: expected points (G, N, D) and valid (G, N), got {tuple(points.shape)} "
            f"and {tuple(valid.shape)}"
        )
    if num_clusters < 1 or num_iters < 0:
        raise ValueError(
            f"batched_kmeans: need num_clusters >= 1 and num_iters >= 0, got {num_clusters}, {num_iters}"
        )
    valid = valid.to(device=points.device, dtype=torch.bool)
    if init_indices is None:
        init_indices = kmeans_init_indices(valid, num_clusters, generator)
    if init_indices.shape != (points.shape[0], num_clusters):
        raise ValueError(
            f"batched_kmeans: init_indices must be (G, K) = {(points.shape[0], num_clusters)}, "
            f"got {tuple(init_indices.shape)}"
        )
    init_indices = init_indices.to(device=points.device, dtype=torch.long)
    num_points, dim = points.shape[1], points.shape[2]

    # Zero unusable points so that whatever they hold (stale or huge values) cannot leak into sums.
    points = torch.where(valid.unsqueeze(-1), points, torch.zeros_like(points)).detach()  # (G, N, D)
    num_valid = valid.sum(dim=1)  # (G,)
    cluster_ids = torch.arange(num_clusters, device=points.device)  # (K,)
    centre_valid = cluster_ids.unsqueeze(0) < num_valid.unsqueeze(1)  # (G, K)
    if num_points == 0:
        return points.new_zeros(points.shape[0], num_clusters, dim), centre_valid

    gather_index = init_indices.clamp(0, num_points - 1).unsqueeze(-1).expand(-1, -1, dim)  # (G, K, D)
    centres = torch.gather(points, 1, gather_index)  # (G, K, D)
    centres = torch.where(centre_valid.unsqueeze(-1), centres, torch.zeros_like(centres))

    point_sq_norms = points.pow(2).sum(dim=-1, keepdim=True)  # (G, N, 1)
    valid_weights = valid.to(points.dtype).unsqueeze(-1)  # (G, N, 1)
    for _ in range(num_iters):
        centre_sq_norms = centres.pow(2).sum(dim=-1).unsqueeze(1)  # (G, 1, K)
        cross = torch.einsum("gnd,gkd->gnk", points, centres)  # (G, N, K)
        distances = point_sq_norms - 2.0 * cross + centre_sq_norms  # (G, N, K)
        distances = distances.masked_fill(~centre_valid.unsqueeze(1), float("inf"))
        assignment = distances.argmin(dim=-1)  # (G, N); argmin takes the first minimum on ties
        membership = F.one_hot(assignment, num_clusters).to(points.dtype) * valid_weights  # (G, N, K)
        sums = torch.einsum("gnk,gnd->gkd", membership, points)  # (G, K, D)
        sizes = membership.sum(dim=1).unsqueeze(-1)  # (G, K, 1)
        means = sums / sizes.clamp_min(1.0)
        centres = torch.where(sizes > 0, means, centres)  # empty clusters keep their previous centre
    return centres, centre_valid

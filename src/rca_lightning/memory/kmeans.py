"""Batched k-means: many independent groups (one per class) clustered at once on the device.

Seeding is greedy k-means++ (as scikit-learn's ``KMeans``) or uniformly random. Several independent starts
per group run side by side (an extra "start" dimension next to the centres, so the points are read once for
all of them), and every group keeps its lowest-inertia start.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

KMEANS_INITS = ("k-means++", "random")


def _default_num_candidates(num_clusters: int) -> int:
    """scikit-learn's number of greedy k-means++ draws per centre: 2 + floor(ln K)."""
    return 2 + int(math.log(num_clusters))


def _check_points_and_valid(caller: str, points: Tensor, valid: Tensor) -> None:
    if points.dim() != 3 or valid.shape != points.shape[:2]:
        raise ValueError(
            f"{caller}: expected points (G, N, D) and valid (G, N), got {tuple(points.shape)} "
            f"and {tuple(valid.shape)}"
        )


def _masked_points(points: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Zero unusable points so whatever they hold (stale or huge values) cannot leak into any sum.

    Returns points (G, N, D) (detached), valid (G, N) bool on their device, squared norms (G, N).
    """
    valid = valid.to(device=points.device, dtype=torch.bool)
    points = torch.where(valid.unsqueeze(-1), points, torch.zeros_like(points)).detach()
    return points, valid, points.pow(2).sum(dim=-1)


def _squared_distances(points: Tensor, point_sq_norms: Tensor, centres: Tensor) -> Tensor:
    """(G, N, D) points, their (G, N) squared norms, (G, S, K, D) centres -> (G, N, S, K), clamped at 0."""
    num_groups, num_starts, num_clusters, dim = centres.shape
    flat_centres = centres.reshape(num_groups, num_starts * num_clusters, dim)  # (G, S * K, D)
    cross = torch.einsum("gnd,gmd->gnm", points, flat_centres)  # (G, N, S * K)
    centre_sq_norms = flat_centres.pow(2).sum(dim=-1).unsqueeze(1)  # (G, 1, S * K)
    distances = (point_sq_norms.unsqueeze(-1) - 2.0 * cross + centre_sq_norms).clamp_min(0.0)
    return distances.view(num_groups, -1, num_starts, num_clusters)


def _start_inertia(
    points: Tensor, point_sq_norms: Tensor, valid: Tensor, centres: Tensor, centre_valid: Tensor
) -> Tensor:
    """Inertia of every start: (G, S, K, D) centres, (G, K) centre_valid -> (G, S)."""
    distances = _squared_distances(points, point_sq_norms, centres)  # (G, N, S, K)
    distances = distances.masked_fill(~centre_valid[:, None, None, :], float("inf"))
    nearest = distances.min(dim=-1).values  # (G, N, S)
    return torch.where(valid.unsqueeze(-1), nearest, torch.zeros_like(nearest)).sum(dim=1)


def _weighted_draws(exponentials: Tensor, weights: Tensor) -> Tensor:
    """Exponential race: (T, G, S, N) Exp(1) variates and (G, S, N) weights >= 0 -> (G, S, T) indices.

    Draw t of row (g, s) is n with probability weights[g, s, n] / weights[g, s].sum(), as the argmin over n
    of exponentials[t, g, s, n] / weights[g, s, n]; a zero-weight point is never drawn unless all are.
    Weights are scaled to a row maximum of 1 first, so tiny ones cannot overflow every key to inf.
    """
    row_max = weights.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    scaled = weights / row_max
    keys = (exponentials / scaled).masked_fill(scaled == 0, float("inf"))  # also turns 0 / 0 into inf
    return keys.argmin(dim=-1).permute(1, 2, 0)


def _exponentials(generator: torch.Generator, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Exp(1) variates drawn on the generator's device and moved to ``like``'s device and dtype."""
    uniforms = torch.rand(shape, generator=generator, device=generator.device)  # in [0, 1)
    return -torch.log1p(-uniforms.to(device=like.device, dtype=like.dtype))


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


def _plusplus_start_indices(
    points: Tensor,
    point_sq_norms: Tensor,
    valid: Tensor,
    num_clusters: int,
    num_starts: int,
    num_candidates: int,
    generator: torch.Generator,
) -> Tensor:
    """Greedy k-means++ for S independent starts per group (see ``kmeans_plusplus_indices``) -> (G, S, K).

    ``points`` must be zero where ``valid`` is False and ``point_sq_norms`` their (G, N) squared norms.
    """
    num_groups, num_points, _ = points.shape
    device = points.device
    indices = torch.zeros(num_groups, num_starts, num_clusters, dtype=torch.long, device=device)
    if num_points == 0:
        return indices
    group_ids = torch.arange(num_groups, device=device)[:, None, None]  # (G, 1, 1)
    start_valid = valid.unsqueeze(1)  # (G, 1, N)
    available = start_valid.expand(-1, num_starts, -1).clone()  # (G, S, N) valid points not chosen yet

    first_draws = _exponentials(generator, (1, num_groups, num_starts, num_points), points)
    chosen = _weighted_draws(first_draws, available.to(points.dtype))  # (G, S, 1)
    step_draws = _exponentials(
        generator, (num_clusters - 1, num_candidates, num_groups, num_starts, num_points), points
    )
    # (G, S, N) squared distance of every point to its nearest chosen centre.
    closest_sq = _squared_distances(points, point_sq_norms, points[group_ids, chosen]).squeeze(-1)
    closest_sq = closest_sq.transpose(1, 2)
    for step in range(num_clusters):
        indices[:, :, step] = chosen.squeeze(-1)
        available.scatter_(2, chosen, False)
        if step == num_clusters - 1:
            break
        weights = closest_sq * available  # (G, S, N)
        no_mass = weights.sum(dim=-1, keepdim=True) <= 0  # only duplicates of chosen centres (or none) left
        weights = torch.where(no_mass, available.to(points.dtype), weights)
        candidates = _weighted_draws(step_draws[step], weights)  # (G, S, T)
        candidate_sq = _squared_distances(points, point_sq_norms, points[group_ids, candidates])  # (G,N,S,T)
        new_closest_sq = torch.minimum(closest_sq.unsqueeze(2), candidate_sq.permute(0, 2, 3, 1))  # (G,S,T,N)
        potentials = (new_closest_sq * start_valid.unsqueeze(2)).sum(dim=-1)  # (G, S, T)
        best = potentials.argmin(dim=-1, keepdim=True)  # (G, S, 1), first minimum on ties
        chosen = candidates.gather(2, best)  # (G, S, 1)
        closest_sq = new_closest_sq.gather(2, best.unsqueeze(-1).expand(-1, -1, -1, num_points)).squeeze(2)
    # Groups with fewer valid points than K ran out of points: their extra entries are meaningless.
    has_centre = torch.arange(num_clusters, device=device) < valid.sum(dim=1)[:, None, None]  # (G, 1, K)
    return torch.where(has_centre, indices, torch.zeros_like(indices))


def kmeans_plusplus_indices(
    points: Tensor,
    valid: Tensor,
    num_clusters: int,
    generator: torch.Generator | None = None,
    num_candidates: int | None = None,
) -> Tensor:
    """Greedy k-means++ initial centres per group, all groups at once (one loop step per centre).

    The first centre is uniform among the group's valid points. Every next centre is chosen as in
    scikit-learn's k-means++: ``num_candidates`` points are drawn independently with probability
    proportional to D(x)^2, the squared distance from x to its nearest chosen centre (only valid points
    not chosen yet can be drawn), and the candidate that leaves the smallest potential (sum over valid
    points of D^2 once it is added) wins; ties go to the earliest draw. ``num_candidates=1`` is plain
    k-means++. When every remaining valid point has D = 0 (duplicates of chosen centres), the draw is
    uniform among them, so the centres are always distinct points.

    Uniform variates are drawn on the generator's device and moved to ``points``' device, so a seed gives
    the same indices on every device (up to rounding of the distances).

    Args:
        points: (G, N, D) points; invalid ones may hold anything.
        valid: (G, N) bool, which points of each group may be used.
        num_clusters: K, the number of centres per group.
        generator: source of randomness; ``None`` uses a generator seeded with 0 (deterministic).
        num_candidates: T, draws per centre after the first; ``None`` uses scikit-learn's 2 + floor(ln K)
            (``_default_num_candidates``).

    Returns:
        (G, K) long point indices. Row g starts with min(K, valid[g].sum()) distinct valid indices in the
        order they were chosen; the remaining entries are 0 and must be ignored (see ``batched_kmeans``).
    """
    _check_points_and_valid("kmeans_plusplus_indices", points, valid)
    if num_clusters < 1:
        raise ValueError(f"kmeans_plusplus_indices: num_clusters must be >= 1, got {num_clusters}")
    if num_candidates is None:
        num_candidates = _default_num_candidates(num_clusters)
    if num_candidates < 1:
        raise ValueError(f"kmeans_plusplus_indices: num_candidates must be >= 1, got {num_candidates}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    points, valid, point_sq_norms = _masked_points(points, valid)
    return _plusplus_start_indices(
        points, point_sq_norms, valid, num_clusters, 1, num_candidates, generator
    ).squeeze(1)


def kmeans_inertia(points: Tensor, valid: Tensor, centres: Tensor, centre_valid: Tensor) -> Tensor:
    """Per group, the sum over valid points of the squared distance to the nearest valid centre.

    Args:
        points: (G, N, D) points; invalid ones may hold anything.
        valid: (G, N) bool mask of the points that count.
        centres: (G, K, D) centres.
        centre_valid: (G, K) bool mask of usable centres.

    Returns:
        (G,) inertia in ``points``' dtype: 0 for a group without valid points, inf for a group with valid
        points but no valid centre.
    """
    _check_points_and_valid("kmeans_inertia", points, valid)
    points, valid, point_sq_norms = _masked_points(points, valid)
    centres = centres.to(device=points.device, dtype=points.dtype).unsqueeze(1)  # (G, 1, K, D)
    centre_valid = centre_valid.to(device=points.device, dtype=torch.bool)
    return _start_inertia(points, point_sq_norms, valid, centres, centre_valid).squeeze(1)


def _lloyd(
    points: Tensor,
    point_sq_norms: Tensor,
    valid: Tensor,
    centres: Tensor,
    centre_valid: Tensor,
    num_iters: int,
) -> Tensor:
    """Lloyd iterations of every start: (G, S, K, D) centres -> (G, S, K, D); see ``batched_kmeans``.

    ``points`` must be zero where ``valid`` is False and ``point_sq_norms`` their (G, N) squared norms.
    """
    num_clusters = centres.shape[2]
    valid_weights = valid.to(points.dtype)[:, :, None, None]  # (G, N, 1, 1)
    for _ in range(num_iters):
        distances = _squared_distances(points, point_sq_norms, centres)  # (G, N, S, K)
        distances = distances.masked_fill(~centre_valid[:, None, None, :], float("inf"))
        assignment = distances.argmin(dim=-1)  # (G, N, S); argmin takes the first minimum on ties
        membership = F.one_hot(assignment, num_clusters).to(points.dtype) * valid_weights  # (G, N, S, K)
        sums = torch.einsum("gnsk,gnd->gskd", membership, points)  # (G, S, K, D)
        sizes = membership.sum(dim=1).unsqueeze(-1)  # (G, S, K, 1)
        means = sums / sizes.clamp_min(1.0)
        centres = torch.where(sizes > 0, means, centres)  # empty clusters keep their previous centre
    return centres


def batched_kmeans(
    points: Tensor,
    valid: Tensor,
    num_clusters: int,
    num_iters: int = 10,
    generator: torch.Generator | None = None,
    init_indices: Tensor | None = None,
    init: str = "k-means++",
    num_restarts: int = 1,
) -> tuple[Tensor, Tensor]:
    """Lloyd k-means run independently in every group, all groups and starts in one set of tensor operations.

    Centre k of group g is valid when the group has more than k valid points; invalid centres are zeros and
    never receive points. Each iteration assigns every valid point to its nearest valid centre (ties go to
    the lowest centre index) and moves each centre to the mean of its points; a centre that receives no point
    keeps its previous position. Invalid points never influence anything (they are zeroed before use).

    With ``num_restarts`` R > 1, R independent starts per group run side by side and every group keeps the
    start whose final centres have the lowest inertia (see ``kmeans_inertia``; ties go to the first start).

    Args:
        points: (G, N, D) points.
        valid: (G, N) bool mask of usable points.
        num_clusters: K.
        num_iters: number of Lloyd iterations.
        generator: randomness for the initial centres (ignored when ``init_indices`` is given); ``None``
            uses a generator seeded with 0.
        init_indices: optional explicit starts, (G, K) for one or (G, R, K) for R per group, long initial
            centre indices as returned by ``kmeans_init_indices`` (the first min(K, n_valid) entries of each
            row must be distinct valid points). When given, ``init`` is ignored and ``num_restarts`` must be
            the number of starts it holds.
        init: seeding, "k-means++" (``kmeans_plusplus_indices`` with its default candidates) or "random"
            (``kmeans_init_indices``).
        num_restarts: R, independent starts per group (scikit-learn's ``n_init``).

    Returns:
        centres: (G, K, D) cluster centres, in ``points``' dtype and device.
        centre_valid: (G, K) bool.
    """
    _check_points_and_valid("batched_kmeans", points, valid)
    if num_clusters < 1 or num_iters < 0:
        raise ValueError(
            f"batched_kmeans: need num_clusters >= 1 and num_iters >= 0, got {num_clusters}, {num_iters}"
        )
    if init not in KMEANS_INITS:
        raise ValueError(f"batched_kmeans: init must be one of {KMEANS_INITS}, got {init!r}")
    if num_restarts < 1:
        raise ValueError(f"batched_kmeans: num_restarts must be >= 1, got {num_restarts}")
    num_groups, num_points, dim = points.shape
    if init_indices is not None:
        if init_indices.dim() == 2:
            init_indices = init_indices.unsqueeze(1)  # (G, 1, K)
        if init_indices.shape != (num_groups, num_restarts, num_clusters):
            raise ValueError(
                f"batched_kmeans: init_indices must be (G, K) = {(num_groups, num_clusters)} or (G, R, K) = "
                f"{(num_groups, num_restarts, num_clusters)} with R = num_restarts, "
                f"got {tuple(init_indices.shape)}"
            )
    points, valid, point_sq_norms = _masked_points(points, valid)
    cluster_ids = torch.arange(num_clusters, device=points.device)  # (K,)
    centre_valid = cluster_ids.unsqueeze(0) < valid.sum(dim=1, keepdim=True)  # (G, K)
    if num_points == 0:
        return points.new_zeros(num_groups, num_clusters, dim), centre_valid
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    if init_indices is not None:
        start_indices = init_indices.to(device=points.device, dtype=torch.long)  # (G, R, K)
    elif init == "k-means++":
        num_candidates = _default_num_candidates(num_clusters)
        start_indices = _plusplus_start_indices(
            points, point_sq_norms, valid, num_clusters, num_restarts, num_candidates, generator
        )  # (G, R, K)
    else:  # start r of group g is row g * R + r
        start_valid = valid.repeat_interleave(num_restarts, dim=0)  # (G * R, N)
        start_indices = kmeans_init_indices(start_valid, num_clusters, generator)
        start_indices = start_indices.view(num_groups, num_restarts, num_clusters)  # (G, R, K)
    group_ids = torch.arange(num_groups, device=points.device)[:, None, None]  # (G, 1, 1)
    centres = points[group_ids, start_indices.clamp(0, num_points - 1)]  # (G, R, K, D)
    centres = torch.where(centre_valid[:, None, :, None], centres, torch.zeros_like(centres))
    centres = _lloyd(points, point_sq_norms, valid, centres, centre_valid, num_iters)
    if num_restarts == 1:
        return centres.squeeze(1), centre_valid

    inertia = _start_inertia(points, point_sq_norms, valid, centres, centre_valid)  # (G, R)
    best_start = inertia.argmin(dim=1)  # (G,)
    return centres[group_ids.view(-1), best_start], centre_valid

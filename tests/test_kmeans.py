"""Batched k-means against a per-group, per-point Lloyd loop from the same initial centres."""

import pytest
import torch

from rca_lightning.memory import batched_kmeans, kmeans_init_indices
from tests.references import reference_kmeans


def _random_problem(seed: int, num_groups: int = 5, num_points: int = 12, dim: int = 3):
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(num_groups, num_points, dim, generator=generator, dtype=torch.float64)
    valid = torch.rand(num_groups, num_points, generator=generator) > 0.3
    valid[0] = True  # full group
    valid[1] = False  # empty group
    valid[2] = False
    valid[2, [3, 7]] = True  # fewer valid points than K
    return points, valid, generator


def test_init_indices_are_distinct_valid_and_seeded() -> None:
    points, valid, _ = _random_problem(0)
    num_clusters = 4
    indices = kmeans_init_indices(valid, num_clusters, torch.Generator().manual_seed(7))
    assert indices.shape == (5, num_clusters) and indices.dtype == torch.long
    for g in range(valid.shape[0]):
        num_usable = min(num_clusters, int(valid[g].sum()))
        chosen = indices[g, :num_usable].tolist()
        assert len(set(chosen)) == num_usable
        assert all(bool(valid[g, i]) for i in chosen)
    assert torch.equal(indices, kmeans_init_indices(valid, num_clusters, torch.Generator().manual_seed(7)))
    assert not torch.equal(
        indices, kmeans_init_indices(valid, num_clusters, torch.Generator().manual_seed(8))
    )


def test_init_indices_with_more_clusters_than_points() -> None:
    valid = torch.ones(2, 3, dtype=torch.bool)
    indices = kmeans_init_indices(valid, 5, torch.Generator().manual_seed(0))
    assert indices.shape == (2, 5)
    assert sorted(indices[0, :3].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("num_iters", [0, 1, 6])
def test_batched_kmeans_matches_reference(seed: int, num_iters: int) -> None:
    points, valid, generator = _random_problem(seed)
    num_clusters = 4
    init_indices = kmeans_init_indices(valid, num_clusters, generator)
    centres, centre_valid = batched_kmeans(points, valid, num_clusters, num_iters, init_indices=init_indices)
    expected_centres, expected_valid = reference_kmeans(points, valid, num_clusters, num_iters, init_indices)
    assert torch.equal(centre_valid, expected_valid)
    assert centre_valid[2].tolist() == [True, True, False, False]
    assert not centre_valid[1].any()
    torch.testing.assert_close(centres, expected_centres, atol=1e-5, rtol=1e-5)


def test_empty_cluster_keeps_its_previous_centre() -> None:
    # Points 0 and 1 coincide: both become initial centres, ties go to centre 0, so centre 1 gets no point.
    generator = torch.Generator().manual_seed(5)
    points = torch.randn(1, 8, 2, generator=generator, dtype=torch.float64)
    points[0, 1] = points[0, 0]
    valid = torch.ones(1, 8, dtype=torch.bool)
    init_indices = torch.tensor([[0, 1, 5]])
    centres, _ = batched_kmeans(points, valid, 3, num_iters=1, init_indices=init_indices)
    assert torch.equal(centres[0, 1], points[0, 0])
    assert not torch.equal(centres[0, 0], points[0, 0])  # centre 0 moved to the mean of its members
    for num_iters in (1, 2, 5):
        expected, _ = reference_kmeans(points, valid, 3, num_iters, init_indices)
        got, _ = batched_kmeans(points, valid, 3, num_iters=num_iters, init_indices=init_indices)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_invalid_points_never_influence_the_result() -> None:
    points, valid, _ = _random_problem(1)
    init_indices = kmeans_init_indices(valid, 4, torch.Generator().manual_seed(0))
    centres, _ = batched_kmeans(points, valid, 4, 5, init_indices=init_indices)
    poisoned = points.clone()
    poisoned[~valid] = 1e6
    poisoned_centres, _ = batched_kmeans(poisoned, valid, 4, 5, init_indices=init_indices)
    assert torch.equal(centres, poisoned_centres)
    assert torch.isfinite(poisoned_centres).all()


def test_batched_kmeans_is_deterministic_and_float32_safe() -> None:
    points, valid, _ = _random_problem(2)
    points = points.float()
    first = batched_kmeans(points, valid, 3, 5, generator=torch.Generator().manual_seed(11))
    second = batched_kmeans(points, valid, 3, 5, generator=torch.Generator().manual_seed(11))
    default = batched_kmeans(points, valid, 3, 5)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(default[0], batched_kmeans(points, valid, 3, 5)[0])
    assert first[0].dtype == torch.float32 and torch.isfinite(first[0]).all()


def test_kmeans_recovers_separated_clusters() -> None:
    generator = torch.Generator().manual_seed(0)
    truth = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = (truth.repeat_interleave(10, dim=0) + 0.1 * torch.randn(30, 2, generator=generator))[None]
    init_indices = torch.tensor([[0, 10, 20]])
    centres, _ = batched_kmeans(points, torch.ones(1, 30, dtype=torch.bool), 3, 5, init_indices=init_indices)
    torch.testing.assert_close(centres[0], truth, atol=0.1, rtol=0)


def test_batched_kmeans_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="valid"):
        batched_kmeans(torch.zeros(2, 5, 3), torch.ones(2, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="init_indices"):
        batched_kmeans(
            torch.zeros(2, 5, 3), torch.ones(2, 5, dtype=torch.bool), 2, init_indices=torch.zeros(2, 3)
        )

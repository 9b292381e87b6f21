"""IRN's random walk against a dense reference written from the method's description (IRN_REFERENCE.md §6):
pairwise affinities ``1 - max B`` along the straight path, ``A ** beta`` column-normalised, squared
``exp_times`` times, seeds ``x (1 - B)`` times the result; the label map against the background plane."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rca_lightning.pseudo.random_walk import random_walk, random_walk_mask, transition_matrix
from rca_lightning.pseudo.refiners import RandomWalkRefiner
from rca_lightning.utils.errors import InvalidSetting


def reference_path(start: tuple[int, int], end: tuple[int, int]) -> set[tuple[int, int]]:
    """Pixels of the straight segment: the points start + t (end - start), t = k / n (n = the longer side),
    each rounded half up."""
    (y0, x0), (y1, x1) = start, end
    n = max(abs(y1 - y0), abs(x1 - x0))
    if n == 0:
        return {start}
    return {
        (math.floor(y0 + k / n * (y1 - y0) + 0.5), math.floor(x0 + k / n * (x1 - x0) + 0.5))
        for k in range(n + 1)
    }


def reference_walk(
    seeds: np.ndarray, boundary: np.ndarray, radius: int, beta: float, exp_times: int
) -> np.ndarray:
    """The dense computation, pixel pair by pixel pair, in float64."""
    height, width = boundary.shape
    pixels = [(y, x) for y in range(height) for x in range(width)]
    affinity = np.zeros((len(pixels), len(pixels)))
    for i, p in enumerate(pixels):
        for j, q in enumerate(pixels):
            if i == j:
                affinity[i, j] = 1.0  # the diagonal is 1
            elif (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 < radius**2:
                affinity[i, j] = 1.0 - max(boundary[y, x] for y, x in reference_path(p, q))
    transition = affinity**beta
    transition = transition / transition.sum(0, keepdims=True)
    for _ in range(exp_times):
        transition = transition @ transition
    start = (seeds * (1.0 - boundary)).reshape(len(seeds), -1)
    return (start @ transition).reshape(seeds.shape)


@pytest.fixture
def maps() -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(0)
    height, width = 9, 11
    boundary = generator.uniform(0.0, 0.3, (height, width))
    boundary[:, 5] = 0.95  # a wall between the left and the right half
    seeds = np.zeros((2, height, width))
    seeds[0, 4, 2] = 1.0  # class 0 seeded on the left, class 1 on the right
    seeds[1, 3, 8] = 0.8
    seeds += generator.uniform(0.0, 0.05, seeds.shape)
    return seeds, boundary


@pytest.mark.parametrize(("radius", "beta", "exp_times"), [(5, 10.0, 8), (3, 4.0, 3), (2, 1.0, 0)])
def test_walk_matches_the_dense_reference(maps, radius, beta, exp_times):
    seeds, boundary = maps
    expected = reference_walk(seeds, boundary, radius, beta, exp_times)
    walked = random_walk(torch.from_numpy(seeds), torch.from_numpy(boundary), radius, beta, exp_times)
    np.testing.assert_allclose(walked.numpy(), expected, rtol=1e-9, atol=1e-12)
    single = random_walk(
        torch.from_numpy(seeds).float(), torch.from_numpy(boundary).float(), radius, beta, exp_times
    )
    np.testing.assert_allclose(single.numpy(), expected, atol=1e-5 * expected.max())


def test_transition_columns_sum_to_one_and_the_wall_separates(maps):
    seeds, boundary = maps
    step = transition_matrix(torch.from_numpy(boundary), radius=5, beta=10.0).to_dense()  # R = T transposed
    np.testing.assert_allclose(step.sum(1).numpy(), 1.0, rtol=1e-12)
    # One seed pixel per class, either side of a wall (affinity across it 1e-3 ** 10): each class fills
    # its own side (the walk evens out the mass within a region).
    wall, clean = boundary.copy(), np.zeros_like(seeds)
    wall[:, 5] = 0.999
    clean[0, 4, 2], clean[1, 3, 8] = 1.0, 0.8
    walked = random_walk(torch.from_numpy(clean), torch.from_numpy(wall)).numpy()
    assert walked[0, :, :5].sum() > 10 * walked[0, :, 6:].sum()
    assert walked[1, :, 6:].sum() > 10 * walked[1, :, :5].sum()


def test_label_map_is_the_upsampled_walk_against_the_background(maps):
    seeds, boundary = maps
    classes = np.array([3, 7])
    size = (34, 41)  # stride 4: 9 x 11
    mask = random_walk_mask(
        torch.from_numpy(seeds), torch.from_numpy(boundary), classes, size, background=0.25
    )
    walked = torch.from_numpy(reference_walk(seeds, boundary, 5, 10.0, 8))
    scores = F.interpolate(walked[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :34, :41]
    scores = scores / scores.max()
    expected = np.where(scores.max(0).values.numpy() > 0.25, np.array([4, 8])[scores.argmax(0).numpy()], 0)
    np.testing.assert_array_equal(mask, expected)
    assert set(np.unique(mask).tolist()) == {0, 4, 8}
    empty = random_walk_mask(torch.zeros(0, 9, 11), torch.from_numpy(boundary), np.array([], int), size)
    assert (empty == 0).all() and empty.shape == size


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"exp_times": -1}, "exp_times: expected an integer in [0, 16], got -1"),
        ({"exp_times": 40}, "exp_times: expected an integer in [0, 16], got 40"),
        ({"radius": 0}, "radius: expected an integer in [1, 32], got 0"),
        ({"radius": 1000}, "radius: expected an integer in [1, 32], got 1000"),
        ({"beta": float("nan")}, "beta: expected a finite number > 0, got nan"),
        ({"beta": 0.0}, "beta: expected a finite number > 0, got 0.0"),
        ({"background": 1.5}, "background: expected a finite number in [0, 1], got 1.5"),
    ],
)
def test_walk_settings_out_of_range_are_named_before_any_map_is_read(tmp_path, settings, message):
    with pytest.raises(InvalidSetting) as caught:
        RandomWalkRefiner(tmp_path / "no_maps_here", **settings)
    assert str(caught.value) == message

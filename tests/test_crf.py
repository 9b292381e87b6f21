"""The dense-CRF wrapper on hand-made images whose answer is known."""

import numpy as np
import pytest

from rca_lightning.pseudo.crf import DenseCRF
from rca_lightning.utils.errors import InvalidSetting


def two_region_image(height: int = 32, width: int = 32) -> np.ndarray:
    """Left half red, right half blue."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (220, 20, 20)
    image[:, width // 2 :] = (20, 20, 220)
    return image


def test_zero_iterations_give_the_normalised_scores():
    # No message passing: the result is softmax(-unary) = clipped scores normalised per pixel.
    scores = np.random.default_rng(0).random((3, 8, 10)).astype(np.float32)
    scores[0, 0, 0] = 0.0  # clipped to min_probability
    probabilities = DenseCRF(iterations=0)(two_region_image(8, 10), scores)
    clipped = np.clip(scores, 1e-5, 1.0)
    np.testing.assert_allclose(probabilities, clipped / clipped.sum(0), atol=1e-5)


def test_equal_scores_stay_undecided():
    # Symmetric Potts kernels and equal unaries: every label keeps probability 1/L.
    probabilities = DenseCRF()(two_region_image(), np.full((2, 32, 32), 0.5, np.float32))
    np.testing.assert_allclose(probabilities, 0.5, atol=1e-5)


def test_crf_follows_the_colour_edge_and_removes_a_weak_wrong_patch():
    height, width = 32, 32
    truth = np.zeros((height, width), np.int64)
    truth[:, width // 2 :] = 1
    scores = np.full((2, height, width), 0.4, np.float32)
    scores[0, :, : width // 2] = 0.6  # weak evidence for the true label in each half
    scores[1, :, width // 2 :] = 0.6
    scores[1, 10:16, 4:10] = 0.62  # a small patch inside the red half where the evidence is wrong
    scores[0, 10:16, 4:10] = 0.38
    scores[0, :, 13:16] = 0.45  # uncertain band next to the colour edge
    scores[1, :, 13:16] = 0.55
    assert (scores.argmax(0) != truth).sum() > 0
    probabilities = DenseCRF()(two_region_image(height, width), scores)
    assert probabilities.shape == (2, height, width) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(0), truth)
    # Deterministic.
    np.testing.assert_array_equal(DenseCRF()(two_region_image(height, width), scores), probabilities)


def test_bad_inputs_name_what_was_expected():
    crf = DenseCRF()
    with pytest.raises(ValueError, match="uint8"):
        crf(two_region_image().astype(np.float32), np.ones((2, 32, 32), np.float32))
    with pytest.raises(ValueError, match="do not match"):
        crf(two_region_image(), np.ones((2, 16, 32), np.float32))


def noise_image_and_scores(seed: int, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    image = generator.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return image, generator.random((3, size, size)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_bgr_channel_order_is_the_rgb_crf_of_the_reversed_image(seed: int):
    image, scores = noise_image_and_scores(seed)
    as_bgr = DenseCRF(channel_order="bgr")(image, scores)
    of_reversed = DenseCRF(channel_order="rgb")(np.ascontiguousarray(image[..., ::-1]), scores)
    np.testing.assert_array_equal(as_bgr, of_reversed)
    # The lattice is not symmetric in the channels, so the order is a real setting.
    as_rgb = DenseCRF(channel_order="rgb")(image, scores)
    assert (as_rgb.argmax(0) != as_bgr.argmax(0)).any()


def test_unknown_channel_order_is_rejected():
    with pytest.raises(InvalidSetting, match=r"channel_order: expected one of \['rgb', 'bgr'\], got 'hsv'"):
        DenseCRF(channel_order="hsv")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"iterations": -1}, "iterations: expected an integer in [0, 100], got -1"),
        ({"iterations": 10**6}, "iterations: expected an integer in [0, 100], got 1000000"),
        ({"iterations": 2.5}, "iterations: expected an integer in [0, 100], got 2.5"),
        ({"gaussian_sxy": 0.0}, "gaussian_sxy: expected a finite number > 0, got 0.0"),
        ({"bilateral_srgb": float("inf")}, "bilateral_srgb: expected a finite number > 0, got inf"),
        ({"bilateral_compat": float("nan")}, "bilateral_compat: expected a finite number >= 0, got nan"),
        ({"min_probability": 0.0}, "min_probability: expected a finite number in (0, 1], got 0.0"),
    ],
)
def test_settings_out_of_range_are_named(settings, message):
    with pytest.raises(InvalidSetting) as caught:
        DenseCRF(**settings)
    assert str(caught.value) == message

"""Region masks and masked average pooling against per-image, per-class loops."""

import pytest
import torch

from rca_lightning.memory import masked_average_pool, region_masks
from tests.references import reference_masked_average_pool, reference_region_masks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_masks_match_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    coarse_cams = 3.0 * torch.randn(2, 4, 6, 7, generator=generator, dtype=torch.float64)
    masks = region_masks(coarse_cams)
    assert masks.dtype == torch.bool and masks.shape == coarse_cams.shape
    assert torch.equal(masks, reference_region_masks(coarse_cams))


def test_region_masks_select_the_activated_pixels() -> None:
    coarse_cams = torch.zeros(1, 2, 4, 4)
    coarse_cams[0, 0, 1:3, 1:3] = 5.0  # class 0 fires in the centre, so class 1 wins the rest
    masks = region_masks(coarse_cams)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(masks[0, 0], expected)
    assert torch.equal(masks[0, 1], ~expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mask_size", [(8, 8), (16, 16), (4, 4)])
def test_masked_average_pool_matches_reference(seed: int, mask_size: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 5, 8, 8, generator=generator, dtype=torch.float64)
    masks = torch.rand(3, 4, *mask_size, generator=generator) > 0.6
    masks[0, 1] = False  # empty region
    masks[2] = False  # an image with no region at all
    pooled = masked_average_pool(features, masks)
    assert pooled.shape == (3, 4, 5)
    torch.testing.assert_close(pooled, reference_masked_average_pool(features, masks), atol=1e-5, rtol=1e-5)
    assert torch.equal(pooled[0, 1], torch.zeros(5, dtype=torch.float64))
    assert torch.equal(pooled[2], torch.zeros(4, 5, dtype=torch.float64))


def test_masked_average_pool_float_weights_match_reference() -> None:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 3, 6, 6, generator=generator, dtype=torch.float64)
    weights = torch.rand(2, 2, 6, 6, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        masked_average_pool(features, weights), reference_masked_average_pool(features, weights)
    )


def test_masked_average_pool_pipeline_with_region_masks() -> None:
    generator = torch.Generator().manual_seed(4)
    coarse_cams = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    features = torch.randn(2, 6, 8, 8, generator=generator, dtype=torch.float64)
    masks = region_masks(coarse_cams)
    torch.testing.assert_close(
        masked_average_pool(features, masks), reference_masked_average_pool(features, masks)
    )


def test_masked_average_pool_all_empty_is_zero_and_differentiable() -> None:
    features = torch.randn(2, 4, 5, 5, requires_grad=True)
    pooled = masked_average_pool(features, torch.zeros(2, 3, 5, 5, dtype=torch.bool))
    assert torch.equal(pooled, torch.zeros(2, 3, 4))
    pooled.sum().backward()
    assert torch.isfinite(features.grad).all()


def test_masked_average_pool_gradient_reaches_features_inside_mask_only() -> None:
    features = torch.randn(1, 2, 4, 4, requires_grad=True)
    masks = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    masks[0, 0, :2, :2] = True
    masked_average_pool(features, masks).sum().backward()
    assert torch.allclose(features.grad[0, :, :2, :2], torch.full((2, 2, 2), 0.25))
    assert torch.equal(features.grad[0, :, 2:, :], torch.zeros(2, 2, 4))


def test_masked_average_pool_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same B"):
        masked_average_pool(torch.zeros(2, 3, 4, 4), torch.zeros(3, 2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="coarse_cams"):
        region_masks(torch.zeros(2, 3, 4))

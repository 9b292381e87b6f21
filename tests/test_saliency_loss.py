"""EPS saliency loss against a per-image, per-class, per-pixel reference written from EPS_REFERENCE.md §2."""

import math

import pytest
import torch

from rca_lightning.losses import EPSSaliencyLoss
from rca_lightning.utils.errors import InvalidSetting


def reference_eps_saliency_loss(
    cams: torch.Tensor, labels: torch.Tensor, saliency: torch.Tensor, tau: float, lam: float
) -> tuple[torch.Tensor, list[set[int]]]:
    """The loss one image, one class, one pixel at a time; also each image's foreground set.

    cams (B, C+1, h, w), labels (B, C), saliency (B, H, W) -> scalar loss, [foreground classes per image].
    """
    batch_size, num_channels, height, width = cams.shape
    num_classes = num_channels - 1
    background_channel = num_classes
    image_height, image_width = saliency.shape[-2:]
    squared_errors = []
    foreground_sets = []
    for b in range(batch_size):
        # 1. Nearest resize: CAM pixel (i, j) reads image pixel (floor(i * H / h), floor(j * W / w)).
        small_saliency = [
            [
                float(saliency[b, (i * image_height) // height, (j * image_width) // width])
                for j in range(width)
            ]
            for i in range(height)
        ]
        # 2. Softmax over the C+1 channels, pixel by pixel.
        probs = [[[None] * width for _ in range(height)] for _ in range(num_channels)]
        for i in range(height):
            for j in range(width):
                exps = [torch.exp(cams[b, c, i, j]) for c in range(num_channels)]
                total = sum(exps)
                for c in range(num_channels):
                    probs[c][i][j] = exps[c] / total
        # 3-4. Foreground / background sets from the overlap ratio of the rounded maps.
        foreground, background = set(), {background_channel}
        for k in range(num_classes):
            if float(labels[b, k]) != 1.0:
                continue
            class_pixels = [
                (i, j)
                for i in range(height)
                for j in range(width)
                if round(float(probs[k][i][j].detach())) == 1
            ]
            salient_class_pixels = [(i, j) for (i, j) in class_pixels if round(small_saliency[i][j]) == 1]
            ratio = len(salient_class_pixels) / len(class_pixels) if class_pixels else 0.0
            if ratio > tau:
                foreground.add(k)
            else:
                background.add(k)
        foreground_sets.append(foreground)
        # 5-7. M_fg, M_bg, S_hat and the squared error, pixel by pixel.
        for i in range(height):
            for j in range(width):
                foreground_map = sum((probs[k][i][j] for k in foreground), torch.zeros((), dtype=cams.dtype))
                background_map = 1 - sum(probs[k][i][j] for k in background)
                estimate = lam * foreground_map + (1 - lam) * background_map
                squared_errors.append((estimate - small_saliency[i][j]) ** 2)
    return sum(squared_errors) / len(squared_errors), foreground_sets


def _foreground_sets(decisions: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(row).flatten().tolist()) for row in decisions]


def _random_batch(seed: int, num_classes: int, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    cams = 3.0 * torch.randn(3, num_classes + 1, 7, 7, generator=generator, dtype=dtype)
    labels = torch.zeros(3, num_classes, dtype=dtype)  # image 0: no tag
    labels[1, int(torch.randint(num_classes, (1,), generator=generator))] = 1.0  # image 1: one tag
    labels[2] = 1.0  # image 2: every class tagged
    # Coarse blobs plus noise, so that overlap ratios spread over [0, 1].
    blobs = torch.rand(3, 1, 4, 4, generator=generator, dtype=dtype)
    blobs = torch.nn.functional.interpolate(blobs, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    saliency = (blobs + 0.3 * torch.rand(3, 28, 28, generator=generator, dtype=dtype)).clamp(0, 1)
    return cams, labels, saliency


def test_matches_reference_on_random_batches() -> None:
    decisions_seen = set()
    for seed in range(4):
        for num_classes in (4, 5):
            cams, labels, saliency = _random_batch(seed, num_classes)
            for tau, lam in ((0.4, 0.5), (0.2, 0.9), (0.7, 0.3)):
                criterion = EPSSaliencyLoss(tau=tau, lam=lam)
                loss = criterion(cams, labels, saliency)
                expected, expected_sets = reference_eps_saliency_loss(cams, labels, saliency, tau, lam)
                torch.testing.assert_close(loss, expected.to(loss.dtype), atol=1e-5, rtol=1e-5)
                foreground = criterion.foreground_classes(cams, labels, saliency)
                assert foreground.shape == (3, num_classes) and foreground.dtype == torch.bool
                assert _foreground_sets(foreground) == expected_sets
                assert not foreground[0].any()  # untagged classes are never foreground
                tagged = labels.bool()
                decisions_seen.update(foreground[tagged].tolist())
    assert decisions_seen == {True, False}  # both branches were exercised


def test_channel_dimension_and_bool_labels_give_the_same_loss() -> None:
    cams, labels, saliency = _random_batch(7, 4)
    criterion = EPSSaliencyLoss()
    loss = criterion(cams, labels, saliency)
    assert torch.equal(criterion(cams, labels.bool(), saliency.unsqueeze(1)), loss)


def _exact_tau_case(third_pixel_saliency: float):
    """One image, C=2, 5x5 CAM: bin(P_0) covers flat pixels 0-4; pixels 0 and 1 are salient.

    Pixel 2 has saliency ``third_pixel_saliency``; the saliency is given at 20x20 (blocks of 4x4).
    """
    cams = torch.zeros(1, 3, 5, 5)
    class_logits = torch.full((25,), -6.0)
    class_logits[:5] = 6.0
    cams[0, 0] = class_logits.view(5, 5)
    labels = torch.tensor([[1.0, 0.0]])
    small_saliency = torch.zeros(25)
    small_saliency[:2] = 1.0
    small_saliency[2] = third_pixel_saliency
    small_saliency[10] = 0.9  # salient, but outside bin(P_0)
    saliency = small_saliency.view(1, 5, 5).repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    return cams, labels, saliency


def test_overlap_ratio_exactly_tau_is_background() -> None:
    # A saliency of exactly 0.5 rounds to 0, so the ratio is 2/5 == tau: not above it.
    cams, labels, saliency = _exact_tau_case(third_pixel_saliency=0.5)
    at_tau = EPSSaliencyLoss(tau=0.4, lam=0.5)
    assert not at_tau.foreground_classes(cams, labels, saliency).any()
    just_below = EPSSaliencyLoss(tau=0.4 - 1e-6, lam=0.5)
    assert just_below.foreground_classes(cams, labels, saliency).tolist() == [[True, False]]

    loss_background = at_tau(cams, labels, saliency)
    loss_foreground = just_below(cams, labels, saliency)
    expected_background, sets = reference_eps_saliency_loss(cams, labels, saliency, 0.4, 0.5)
    assert sets == [set()]
    expected_foreground, sets = reference_eps_saliency_loss(cams, labels, saliency, 0.4 - 1e-6, 0.5)
    assert sets == [{0}]
    torch.testing.assert_close(loss_background, expected_background, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_foreground, expected_foreground, atol=1e-5, rtol=1e-5)
    assert not torch.isclose(loss_background, loss_foreground)


def test_overlap_ratio_above_tau_is_foreground() -> None:
    cams, labels, saliency = _exact_tau_case(third_pixel_saliency=0.51)  # ratio 3/5 > 0.4
    assert EPSSaliencyLoss(tau=0.4).foreground_classes(cams, labels, saliency).tolist() == [[True, False]]
    assert not EPSSaliencyLoss(tau=0.6).foreground_classes(cams, labels, saliency).any()  # 3/5 == 0.6


def test_empty_binarised_class_map_is_background() -> None:
    # C=1 and equal logits: P_0 is exactly 0.5 everywhere, which rounds to 0, so bin(P_0) is empty and the
    # ratio is 0 even though every pixel is salient; with tau=0 the class is still background.
    cams = torch.zeros(2, 2, 4, 4)
    labels = torch.tensor([[1.0], [0.0]])
    saliency = torch.ones(2, 8, 8)
    criterion = EPSSaliencyLoss(tau=0.0, lam=0.5)
    assert not criterion.foreground_classes(cams, labels, saliency).any()
    loss = criterion(cams, labels, saliency)
    # Image 0: both channels in the background set, S_hat = 0.5 * 0 + 0.5 * (1 - 1) = 0, error 1.
    # Image 1: untagged, S_hat = 0.5 * (1 - 0.5) = 0.25, error 0.75 ** 2.
    assert loss.item() == pytest.approx((1.0 + 0.75**2) / 2, abs=1e-7)
    expected, sets = reference_eps_saliency_loss(cams, labels, saliency, 0.0, 0.5)
    assert sets == [set(), set()]
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)


def test_gradients_reach_cams_and_match_reference() -> None:
    cams, labels, saliency = _random_batch(11, 4, dtype=torch.float64)
    cams.requires_grad_()
    loss = EPSSaliencyLoss(tau=0.4, lam=0.5)(cams, labels, saliency)
    (gradient,) = torch.autograd.grad(loss, cams)
    reference_cams = cams.detach().clone().requires_grad_()
    expected, _ = reference_eps_saliency_loss(reference_cams, labels, saliency, 0.4, 0.5)
    (expected_gradient,) = torch.autograd.grad(expected, reference_cams)
    assert torch.isfinite(gradient).all()
    assert gradient.abs().sum() > 0
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-10, rtol=1e-7)


def test_zero_loss_when_saliency_is_the_estimate() -> None:
    # lam=1 and one tagged class whose map is the saliency: bin(P_0) == bin(S), ratio 1, S_hat = P_0 = S.
    generator = torch.Generator().manual_seed(3)
    cams = torch.randn(2, 4, 6, 6, generator=generator, dtype=torch.float64)
    cams[:, 0, :3] += 4.0  # bin(P_0) is not empty
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    saliency = torch.softmax(cams, dim=1)[:, 0]
    assert (saliency > 0.5).any(dim=(1, 2)).all()
    criterion = EPSSaliencyLoss(tau=0.9, lam=1.0)
    assert criterion.foreground_classes(cams, labels, saliency)[:, 0].all()
    assert criterion(cams, labels, saliency).item() < 1e-20
    assert EPSSaliencyLoss(tau=0.9, lam=0.0)(cams, labels, saliency).item() > 1e-3


@pytest.mark.parametrize(
    ("setting", "value"),
    [("tau", -0.1), ("tau", 1.5), ("tau", math.nan), ("lam", -0.01), ("lam", 1.01), ("lam", math.nan)],
)
def test_out_of_range_settings_are_rejected(setting: str, value: float) -> None:
    with pytest.raises(InvalidSetting, match=rf"^{setting}: expected a value in \[0, 1\], got"):
        EPSSaliencyLoss(**{setting: value})


def test_bounds_of_the_settings_are_accepted() -> None:
    for tau in (0.0, 1.0):
        for lam in (0.0, 1.0):
            EPSSaliencyLoss(tau=tau, lam=lam)


def test_mismatched_shapes_are_rejected() -> None:
    criterion = EPSSaliencyLoss()
    cams = torch.zeros(2, 4, 5, 5)
    with pytest.raises(ValueError, match="labels"):
        criterion(cams, torch.zeros(2, 4), torch.zeros(2, 10, 10))
    with pytest.raises(ValueError, match="saliency"):
        criterion(cams, torch.zeros(2, 3), torch.zeros(2, 3, 10, 10))

"""The one multi-scale + flip implementation, against a one-view-at-a-time reference, and its users."""

import pytest
import torch

from rca_lightning.imaging.image_arrays import denormalise_images, normalise_images
from rca_lightning.imaging.test_time_augmentation import average_over_views, check_views, sum_over_views
from rca_lightning.pseudo.cam_scores import peak_normalise
from rca_lightning.utils.errors import InvalidSetting
from tests.references import reference_multiscale_cams

SCALES = [0.5, 1.0, 1.5, 2.0]


def test_sum_over_views_matches_one_view_at_a_time_reference():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)  # not flip-symmetric, stride like a backbone
    images = torch.randn(2, 3, 37, 50)
    relu_conv = lambda x: conv(x).relu()
    with torch.no_grad():
        fast = sum_over_views(relu_conv, images, SCALES, flip=True)
        for index in range(2):
            expected = reference_multiscale_cams(conv, images[index], SCALES, flip=True)
            torch.testing.assert_close(fast[index], expected, atol=1e-5, rtol=1e-5)
        no_flip = sum_over_views(relu_conv, images, SCALES, flip=False)
        torch.testing.assert_close(
            no_flip[0], reference_multiscale_cams(conv, images[0], SCALES, False), atol=1e-5, rtol=1e-5
        )
    assert not torch.allclose(fast, 2 * no_flip), (
        "the flip pass must change the maps of a non-symmetric model"
    )


def test_average_over_views_is_the_mean_of_the_views_logits():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    images = torch.randn(1, 3, 21, 30)
    views = []
    with torch.no_grad():
        for scale in (0.75, 1.25):  # each view on its own: resize, run, resize back; mirrored and back
            size = (round(21 * scale), round(30 * scale))
            scaled = torch.nn.functional.interpolate(images, size, mode="bilinear", align_corners=False)
            for mirrored in (False, True):
                logits = conv(scaled.flip(-1) if mirrored else scaled)
                logits = logits.flip(-1) if mirrored else logits
                views.append(
                    torch.nn.functional.interpolate(logits, (21, 30), mode="bilinear", align_corners=False)
                )
        expected = torch.stack(views).mean(0)
        torch.testing.assert_close(average_over_views(conv, images, (0.75, 1.25), True), expected)
        torch.testing.assert_close(average_over_views(conv, images, (1.0,), False), conv(images))


@pytest.mark.parametrize(
    "scales", [[], [0.0], [1.0, -0.5], [float("nan")], [1.0, float("inf")], [100.0], [1.0] * 17, None]
)
def test_check_views_names_the_setting(scales):
    with pytest.raises(InvalidSetting, match=r"^scales: expected 1 to 16 finite numbers in \(0, 4\], got"):
        check_views(scales, True, setting="scales")


def test_peak_normalise_divides_each_map_by_its_maximum():
    maps = torch.tensor([[[[-1.0, 2.0], [4.0, 0.0]], [[0.0, 0.0], [0.0, -3.0]]]])  # (1, 2, 2, 2)
    exact = peak_normalise(maps, eps=0.0)
    assert exact[0, 0].tolist() == [[0.0, 0.5], [1.0, 0.0]]
    assert exact[0, 1].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # all non-positive: zero, not NaN
    torch.testing.assert_close(peak_normalise(maps)[0, 0, 1, 0], torch.tensor(4.0 / (4.0 + 1e-5)))


def test_normalise_then_denormalise_gives_back_the_pixels():
    pixels = torch.randint(0, 256, (2, 7, 9, 3), dtype=torch.uint8)
    images = normalise_images(pixels)
    assert images.shape == (2, 3, 7, 9)
    # (pixel / 255 - mean) / std, as albumentations' Normalize(max_pixel_value=255) computes it.
    expected_red = (pixels[..., 0].float() / 255 - 0.485) / 0.229
    torch.testing.assert_close(images[:, 0], expected_red)
    assert torch.equal(denormalise_images(images), pixels)

"""Fully connected CRF (pydensecrf) with the settings of the public RCA / OAA code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.setting_ranges import number_in_range

CHANNEL_ORDERS = ("rgb", "bgr")
# Mean-field iterations at most (the public code runs 10; the result settles within a few dozen).
MAX_ITERATIONS = 100


@dataclass(frozen=True)
class DenseCRF:
    """Mean-field inference of a dense CRF with a Gaussian (smoothness) and a bilateral (appearance) kernel.

    Defaults are the public code's: 10 iterations, Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13
    compat 10, the image in BGR order. Picklable, so a process pool can carry it.

    Args:
        iterations: mean-field iterations.
        gaussian_sxy: spatial standard deviation of the smoothness kernel, in pixels.
        gaussian_compat: weight of the smoothness kernel (Potts).
        bilateral_sxy: spatial standard deviation of the appearance kernel, in pixels.
        bilateral_srgb: colour standard deviation of the appearance kernel, in 0..255 units.
        bilateral_compat: weight of the appearance kernel (Potts).
        min_probability: scores are clipped to at least this before the log (unary = -log score).
        channel_order: channel order the bilateral kernel sees: ``"rgb"`` (the image as given) or
            ``"bgr"`` (channels reversed first: the public code reads images with OpenCV). pydensecrf's
            permutohedral lattice is not exactly symmetric in the channels, so a few pixels differ.
    """

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    min_probability: float = 1e-5
    channel_order: str = "bgr"

    def __post_init__(self) -> None:
        number_in_range("iterations", self.iterations, 0, MAX_ITERATIONS, integer=True)
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            number_in_range(name, getattr(self, name), 0.0, above_minimum=True)
        for name in ("gaussian_compat", "bilateral_compat"):
            number_in_range(name, getattr(self, name), 0.0)
        number_in_range("min_probability", self.min_probability, 0.0, 1.0, above_minimum=True)
        if self.channel_order not in CHANNEL_ORDERS:
            raise InvalidSetting(
                f"channel_order: expected one of {list(CHANNEL_ORDERS)}, got '{self.channel_order}'"
            )

    def __call__(self, image: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Refine per-label scores with the image.

        Args:
            image: (H, W, 3) uint8 RGB image (reversed to BGR first when ``channel_order == "bgr"``).
            scores: (L, H, W) non-negative label scores; need not sum to 1 (a per-pixel factor does
                not change the result).

        Returns:
            (L, H, W) float32 label probabilities (sum to 1 over L).
        """
        import pydensecrf.densecrf as dcrf  # compiled extension: imported only where a CRF runs

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        num_labels, height, width = scores.shape
        if (height, width) != image.shape[:2]:
            raise ValueError(f"scores (L, H, W) {scores.shape} do not match image (H, W, 3) {image.shape}")
        unary = -np.log(np.clip(scores.reshape(num_labels, -1), self.min_probability, 1.0))  # (L, H*W)
        crf = dcrf.DenseCRF2D(width, height, num_labels)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
        crf.addPairwiseGaussian(sxy=self.gaussian_sxy, compat=self.gaussian_compat)
        kernel_image = image[..., ::-1] if self.channel_order == "bgr" else image  # (H, W, 3)
        crf.addPairwiseBilateral(
            sxy=self.bilateral_sxy,
            srgb=self.bilateral_srgb,
            rgbim=np.ascontiguousarray(kernel_image),
            compat=self.bilateral_compat,
        )
        probabilities = np.array(crf.inference(self.iterations), dtype=np.float32)  # (L, H*W)
        return probabilities.reshape(num_labels, height, width)

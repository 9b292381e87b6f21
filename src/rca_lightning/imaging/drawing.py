"""Masks and maps as pictures: masks in the VOC colours, CAM heat maps, classes blended over an image.

Used by the validation image logger, the pipeline's figures and ``rca-predict``'s overlays.
"""

from __future__ import annotations

import cv2
import numpy as np

from rca_lightning.imaging.palette_png import voc_palette

CLASS_OVERLAY_ALPHA = 0.5


def colourise_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices (0 background, 1..C, 255 ignore) -> (H, W, 3) uint8 in the VOC colours."""
    return voc_palette()[mask.astype(np.uint8)]


def turbo_colours(scores: np.ndarray) -> np.ndarray:
    """Scores in [0, 1] of any 2-D shape (S1, S2) -> (S1, S2, 3) uint8 RGB in the turbo colour map."""
    levels = np.rint(np.clip(scores, 0, 1) * 255).astype(np.uint8)
    return cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[..., ::-1]  # OpenCV gives BGR


def cam_overlay(image: np.ndarray, cams: np.ndarray, *, strength: float = 0.6) -> np.ndarray:
    """The image under a turbo heat map of its tagged classes' strongest CAM score, opaque as the score.

    Each pixel blends the turbo colour of ``s = max_k cams[k]`` over the image with weight
    ``strength * s``: where no tagged class scores, the pixel is the image's, untouched.

    Args:
        image: (H, W, 3) uint8 RGB.
        cams: (K, H, W) scores in [0, 1] of the image's K tagged classes.
        strength: weight of the heat colour at score 1.

    Returns:
        (H, W, 3) uint8.
    """
    if len(cams) == 0:
        return image.copy()
    score = np.clip(cams.max(0), 0, 1)  # (H, W)
    weight = strength * score[..., None]  # (H, W, 1)
    return np.rint(image * (1 - weight) + turbo_colours(score) * weight).astype(np.uint8)


def class_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = CLASS_OVERLAY_ALPHA) -> np.ndarray:
    """The image with every non-background pixel blended with its class colour (weight ``alpha``).

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) class values (0 background, 1..C, 255 ignored).

    Returns:
        (H, W, 3) uint8.
    """
    colours = colourise_mask(mask).astype(np.float32)  # (H, W, 3)
    blend = np.where((mask > 0)[:, :, None], (1 - alpha) * image + alpha * colours, image)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


__all__ = ["CLASS_OVERLAY_ALPHA", "cam_overlay", "class_overlay", "colourise_mask", "turbo_colours"]

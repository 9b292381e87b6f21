"""Pseudo-mask rules on one image, as pure numpy functions.

Masks hold 0 for background, ``class index + 1`` for the foreground classes and 255 for ignored pixels.
Two rules:

* CAM + CRF (:func:`refined_scores`, then arg-max): background score ``(1 - max CAM) ** power`` (or a constant
  background threshold), refined by a dense CRF, arg-max.
* Saliency (:func:`saliency_pseudo_mask`, the public RCA code's rule): background = 1 - saliency; pixels
  where two or more channels exceed ``conflict`` are ignored; background pixels that are salient (or
  confidently activated, above ``attention``) are ignored; an image with under ``min_foreground`` of its
  pixels labelled foreground is ignored entirely.
"""

from __future__ import annotations

import numpy as np

from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.pseudo.crf import DenseCRF

DEFAULT_CRF = DenseCRF()


def background_and_class_scores(
    cams: np.ndarray, background_power: float = 4.0, background_threshold: float | None = None
) -> np.ndarray:
    """Stack a background score on top of the class scores.

    Args:
        cams: (K, H, W) scores in [0, 1] of the image's tagged classes (K may be 0).
        background_power: background = ``(1 - max_k cams) ** background_power``.
        background_threshold: if given, a constant background score instead (so that, without a CRF,
            the arg-max labels a pixel foreground exactly when its top score exceeds the threshold).

    Returns:
        (K + 1, H, W) float32 scores, background first.
    """
    cams = np.asarray(cams, dtype=np.float32)
    if background_threshold is not None:
        background = np.full(cams.shape[1:], background_threshold, dtype=np.float32)
    else:
        peak = cams.max(0) if len(cams) else np.zeros(cams.shape[1:], np.float32)  # (H, W)
        background = np.power(1.0 - peak, background_power, dtype=np.float32)
    return np.concatenate([background[None], cams])


def channels_to_labels(channels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Map channel indices (0 = background, k = ``classes[k - 1]``) to mask values (uint8).

    Args:
        channels: (H, W) integers in 0..K.
        classes: (K,) foreground class indices (0-based).
    """
    lookup = np.concatenate([[0], np.asarray(classes, dtype=np.int64) + 1]).astype(np.uint8)  # (K + 1,)
    return lookup[channels]


def refined_scores(
    image: np.ndarray,
    cams: np.ndarray,
    crf: DenseCRF | None = DEFAULT_CRF,
    background_power: float = 4.0,
    background_threshold: float | None = None,
) -> np.ndarray:
    """[background, classes] scores of one image, refined by the dense CRF when one is given.

    Args:
        image: (H, W, 3) uint8.
        cams: (K, H, W) scores in [0, 1] of the tagged classes.
        crf: the CRF, or None for the plain scores.
        background_power: see :func:`background_and_class_scores`.
        background_threshold: see :func:`background_and_class_scores`.

    Returns:
        (K + 1, H, W) float32, background first.
    """
    scores = background_and_class_scores(cams, background_power, background_threshold)  # (K+1, H, W)
    return crf(image, scores) if crf is not None else scores


def saliency_pseudo_mask(
    class_scores: np.ndarray,
    classes: np.ndarray,
    saliency: np.ndarray,
    conflict: float = 0.9,
    attention: float = 0.8,
    background_saliency: int = 32,
    min_foreground: float = 0.01,
) -> np.ndarray:
    """The public code's saliency rule.

    Args:
        class_scores: (K, H, W) scores in [0, 1] of the tagged classes (in the public code the dense-CRF
            probabilities of the CAMs with background ``(1 - max) ** 4``).
        classes: (K,) their class indices (increasing).
        saliency: (H, W) uint8 saliency map, 0..255.
        conflict: a pixel where two or more of [1 - saliency, class scores] exceed this is ignored.
        attention: class scores above this count as salient for the background check.
        background_saliency: a pixel labelled background whose saliency (or attention, as 255) is at least
            this (0..255 units) is ignored.
        min_foreground: if fewer than this fraction of the pixels are foreground, every pixel is ignored.

    Returns:
        (H, W) uint8 mask with 255 for ignored pixels.
    """
    saliency = np.asarray(saliency)
    class_scores = np.asarray(class_scores, dtype=np.float32)
    if saliency.shape != class_scores.shape[1:]:
        raise ValueError(f"saliency (H, W) {saliency.shape} does not match class scores {class_scores.shape}")
    saliency = saliency.astype(np.float32)
    channels = np.concatenate([(1.0 - saliency / 255.0)[None], class_scores])  # (K + 1, H, W)
    mask = channels_to_labels(channels.argmax(0), classes)  # (H, W)
    mask[(channels > conflict).sum(0) > 1] = IGNORE_INDEX
    attended = (class_scores > attention).any(0) if len(class_scores) else np.zeros_like(saliency, bool)
    salient = (saliency >= background_saliency) | attended  # attention counts as saliency 255
    mask[(mask == 0) & salient] = IGNORE_INDEX
    foreground = ((mask > 0) & (mask != IGNORE_INDEX)).mean()
    if foreground < min_foreground:
        mask[:] = IGNORE_INDEX
    return mask

"""IRN's inter-pixel relation labels (Ahn et al., CVPR 2019): confident foreground, confident background,
and the rest ignored, from two CRF passes over the seeds.

Each pass labels every pixel with the arg-max of [a constant background score, the seeds] and refines that
labelling with a dense CRF whose unary is the label itself held with confidence ``label_confidence`` (the
other labels share the rest): the foreground pass with a high background score (``foreground_threshold``,
IRN 0.30: only confident foreground survives), the background pass with a low one (``background_threshold``,
IRN 0.05: only confident background survives). A pixel takes the foreground pass's class where that pass
finds foreground, background where both passes find background, and 255 (ignored) where they disagree.
IRN's CRF: 10 iterations, Gaussian sxy 3 compat 3, bilateral sxy 50 srgb 5 compat 10, RGB order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.pseudo.crf import DenseCRF
from rca_lightning.pseudo.pseudo_masks import background_and_class_scores, channels_to_labels
from rca_lightning.utils.setting_ranges import number_in_range

IRN_LABEL_CRF = DenseCRF(bilateral_sxy=50.0, bilateral_srgb=5.0, channel_order="rgb")


def crf_on_labels(
    image: np.ndarray, labels: np.ndarray, num_labels: int, crf: DenseCRF, confidence: float
) -> np.ndarray:
    """(H, W) channel labels 0..L-1 refined by the CRF, the unary being each pixel's label held with
    probability ``confidence`` and the other ``L - 1`` labels sharing ``1 - confidence``."""
    if num_labels == 1:
        return np.zeros_like(labels)
    others = (1.0 - confidence) / (num_labels - 1)
    scores = np.where(np.arange(num_labels)[:, None, None] == labels[None], confidence, others)  # (L, H, W)
    return crf(image, scores.astype(np.float32)).argmax(0)


@dataclass(frozen=True)
class IRLabelRefiner:
    """A refiner (``refine=ir_labels``) writing IRN's relation labels instead of pseudo masks (module
    docstring): class + 1 confident foreground, 0 confident background, 255 undecided.

    Args:
        foreground_threshold: the foreground pass's background score (IRN 0.30; users raise it with the
            seeds' best threshold: about that threshold + 0.1 to 0.15).
        background_threshold: the background pass's (IRN 0.05; about the best threshold - 0.1).
        label_confidence: the probability of a pixel's own label in the CRF's unary (IRN 0.7).
        crf: the CRF of both passes (IRN's settings by default).
    """

    foreground_threshold: float = 0.30
    background_threshold: float = 0.05
    label_confidence: float = 0.7
    crf: DenseCRF = IRN_LABEL_CRF

    def __post_init__(self) -> None:
        for name in ("foreground_threshold", "background_threshold", "label_confidence"):
            number_in_range(name, getattr(self, name), 0.0, 1.0)

    def __call__(
        self, image: np.ndarray, seeds: np.ndarray, classes: np.ndarray, image_id: str
    ) -> np.ndarray:
        passes = []
        for threshold in (self.foreground_threshold, self.background_threshold):
            scores = background_and_class_scores(seeds, background_threshold=threshold)  # (K + 1, H, W)
            refined = crf_on_labels(image, scores.argmax(0), len(scores), self.crf, self.label_confidence)
            passes.append(channels_to_labels(refined, classes))
        foreground, background = passes
        labels = np.where(foreground > 0, foreground, IGNORE_INDEX).astype(np.uint8)
        labels[(foreground == 0) & (background == 0)] = 0
        return labels


__all__ = ["IRN_LABEL_CRF", "IRLabelRefiner", "crf_on_labels"]

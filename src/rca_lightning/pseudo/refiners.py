"""Refiners: what turns one image's seeds into its pseudo mask (the ``refine=`` config group).

A refiner is any picklable callable ``(image, seeds, classes, image_id) -> mask`` (:class:`Refiner`); the
pseudo-mask writer runs it once per image in a process pool. ``image_id`` lets a refiner read what it keeps
per image (a saliency map, a boundary map). These ship:

* :class:`CRFRefiner` (``refine=crf``, ``refine=none`` without the CRF): background score, dense CRF,
  arg-max (:class:`CRFRefiner`);
* :class:`SaliencyRefiner` (``refine=saliency``): the public RCA code's saliency rule
  (:func:`~rca_lightning.pseudo.pseudo_masks.saliency_pseudo_mask`) on the CRF-refined class scores;
* :class:`RandomWalkRefiner` (``refine=random_walk``): IRN's random walk over a boundary map;
* :class:`~rca_lightning.pseudo.ir_labels.IRLabelRefiner` (``refine=ir_labels``): IRN's relation labels,
  the boundary network's training labels.

A refiner with ``in_process = True`` runs in the writer's process (torch work on a device) instead of the
pool of CPU workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from rca_lightning.imaging.palette_png import read_mask_png
from rca_lightning.pseudo.boundary_maps import boundary_image_scale, read_boundary_map
from rca_lightning.pseudo.crf import DenseCRF
from rca_lightning.pseudo.pseudo_masks import channels_to_labels, refined_scores, saliency_pseudo_mask
from rca_lightning.pseudo.random_walk import MAX_EXP_TIMES, random_walk_mask
from rca_lightning.utils.errors import InvalidData, MissingInput
from rca_lightning.utils.pixel_paths import scaled_size, stride4_size
from rca_lightning.utils.setting_ranges import MAX_RADIUS, number_in_range


def _existing_folder(value: str | os.PathLike, setting: str, expected: str) -> Path:
    """``value`` as an absolute folder; MissingInput naming ``refine.<setting>`` when it is not one."""
    folder = Path(value).expanduser().absolute()
    if not folder.is_dir():
        raise MissingInput(f"refine.{setting}={folder} not found: expected {expected}")
    return folder


def _check_background_score(power: float, threshold: float | None) -> None:
    """InvalidSetting unless the background score's ``background_power`` is a finite number >= 0 and its
    ``background_threshold`` null or in [0, 1]."""
    number_in_range("background_power", power, 0.0)
    if threshold is not None:
        number_in_range("background_threshold", threshold, 0.0, 1.0)


class Refiner(Protocol):
    """Turns one image's seeds into its pseudo mask."""

    def __call__(
        self, image: np.ndarray, seeds: np.ndarray, classes: np.ndarray, image_id: str
    ) -> np.ndarray:
        """The pseudo mask of one image.

        Args:
            image: (H, W, 3) uint8 RGB.
            seeds: (K, H, W) float scores in [0, 1] of the image's tagged classes (K may be 0).
            classes: (K,) their class indices (0-based, increasing).
            image_id: the image's id (for per-image side inputs).

        Returns:
            (H, W) uint8: 0 background, ``class index + 1`` foreground, 255 ignored.
        """


@dataclass(frozen=True)
class CRFRefiner:
    """Background score ``(1 - max seed) ** background_power`` (or the constant ``background_threshold``),
    refined by the dense CRF (``crf=None``: not refined), arg-max.

    Args:
        crf: the dense CRF, or None.
        background_power: exponent of the background score.
        background_threshold: a constant background score instead (e.g. the best threshold of the CAM
            sweep: without a CRF a pixel is then foreground exactly when its top seed exceeds it).
    """

    crf: DenseCRF | None = field(default_factory=DenseCRF)
    background_power: float = 4.0
    background_threshold: float | None = None

    def __post_init__(self) -> None:
        _check_background_score(self.background_power, self.background_threshold)

    def __call__(
        self, image: np.ndarray, seeds: np.ndarray, classes: np.ndarray, image_id: str
    ) -> np.ndarray:
        scores = refined_scores(image, seeds, self.crf, self.background_power, self.background_threshold)
        return channels_to_labels(scores.argmax(0), classes)


@dataclass(frozen=True)
class SaliencyRefiner:
    """The public RCA code's rule: the class scores after the background score and the dense CRF, against
    ``1 - saliency``; conflicting, salient-but-background and nearly empty images ignored.

    Args:
        saliency_dir: folder of grey ``<image_id>.png`` saliency maps (0..255) at the images' sizes.
        crf, background_power, background_threshold: the class scores' refinement (see :class:`CRFRefiner`).
        conflict: a pixel where two or more of [1 - saliency, class scores] exceed this is ignored.
        attention: class scores above this count as salient in the background check.
        background: a background pixel with saliency at least this (0..255) is ignored.
        min_foreground: an image with less foreground than this fraction is ignored entirely.
    """

    saliency_dir: str | os.PathLike
    crf: DenseCRF | None = field(default_factory=DenseCRF)
    background_power: float = 4.0
    background_threshold: float | None = None
    conflict: float = 0.9
    attention: float = 0.8
    background: int = 32
    min_foreground: float = 0.01

    def __post_init__(self) -> None:
        _check_background_score(self.background_power, self.background_threshold)
        for name in ("conflict", "attention", "min_foreground"):
            number_in_range(name, getattr(self, name), 0.0, 1.0)
        number_in_range("background", self.background, 0, 255, integer=True)
        folder = _existing_folder(
            self.saliency_dir, "saliency_dir", "a folder of <image_id>.png saliency maps"
        )
        object.__setattr__(self, "saliency_dir", folder)

    def saliency(self, image_id: str, size: tuple[int, int]) -> np.ndarray:
        """(H, W) uint8 saliency map of ``image_id``, which must be ``size``."""
        path = Path(self.saliency_dir) / f"{image_id}.png"
        if not path.is_file():
            raise MissingInput(
                f"saliency map {path} not found: expected <image_id>.png in "
                f"refine.saliency_dir={self.saliency_dir}"
            )
        saliency = read_mask_png(path)
        if saliency.shape != tuple(size):
            raise InvalidData(f"{path}: size {saliency.shape}, expected the image's {tuple(size)}")
        return saliency

    def __call__(
        self, image: np.ndarray, seeds: np.ndarray, classes: np.ndarray, image_id: str
    ) -> np.ndarray:
        scores = refined_scores(image, seeds, self.crf, self.background_power, self.background_threshold)
        return saliency_pseudo_mask(
            scores[1:],
            classes,
            self.saliency(image_id, image.shape[:2]),
            conflict=self.conflict,
            attention=self.attention,
            background_saliency=self.background,
            min_foreground=self.min_foreground,
        )


@dataclass(frozen=True)
class RandomWalkRefiner:
    """IRN's semantic labels (``refine=random_walk``): the seeds brought to stride 4 (area average), spread
    by the random walk over the image's boundary map (:mod:`rca_lightning.pseudo.random_walk`), upsampled,
    divided by their maximum, against a constant background score, arg-max. No CRF, no ignored pixels.

    Runs in the writer's own process (``in_process``), on ``device`` (default: the GPU when there is one):
    the walk is torch work, not a per-core CPU job.

    Args:
        boundary_dir: folder of ``<image_id>.npy`` boundary maps (``rca-boundary``).
        background: the background plane's score (IRN 0.25).
        radius, beta, exp_times: the walk's settings (IRN: 5, 10, 8, i.e. 256 steps).
        device: where the walk runs (None: ``cuda`` when available, else ``cpu``).
    """

    boundary_dir: str | os.PathLike
    background: float = 0.25
    radius: int = 5
    beta: float = 10.0
    exp_times: int = 8
    device: str | None = None
    in_process: ClassVar[bool] = True

    def __post_init__(self) -> None:
        number_in_range("background", self.background, 0.0, 1.0)
        number_in_range("radius", self.radius, 1, MAX_RADIUS, integer=True)
        number_in_range("beta", self.beta, 0.0, above_minimum=True)
        number_in_range("exp_times", self.exp_times, 0, MAX_EXP_TIMES, integer=True)
        folder = _existing_folder(self.boundary_dir, "boundary_dir", "the boundary maps of rca-boundary")
        object.__setattr__(self, "boundary_dir", folder)
        # The maps are at stride 4 of the image resized by the boundary network's image_scale (read once).
        object.__setattr__(self, "image_scale", boundary_image_scale(folder))
        if self.device is None:
            object.__setattr__(self, "device", "cuda" if torch.cuda.is_available() else "cpu")

    def __call__(
        self, image: np.ndarray, seeds: np.ndarray, classes: np.ndarray, image_id: str
    ) -> np.ndarray:
        walk_size = scaled_size(image.shape[:2], self.image_scale)
        size = stride4_size(walk_size)
        boundary = torch.from_numpy(read_boundary_map(self.boundary_dir, image_id, size)).to(self.device)
        strided = F.interpolate(
            torch.from_numpy(np.asarray(seeds, np.float32))[None], size=size, mode="area"
        )[0]
        return random_walk_mask(
            strided.to(self.device),
            boundary,
            classes,
            image.shape[:2],
            background=self.background,
            radius=self.radius,
            beta=self.beta,
            exp_times=self.exp_times,
            walk_size=walk_size,
        )


__all__ = ["CRFRefiner", "RandomWalkRefiner", "Refiner", "SaliencyRefiner"]

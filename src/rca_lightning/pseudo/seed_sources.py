"""Seeds of CAM scoring and pseudo masks: the CAM files of ``rca-cams``, accumulated attention, or their max.

Kinds (the ``seeds`` setting of ``rca-pseudo`` and ``rca-eval``, :data:`SEED_KINDS`):
    ``cams``: the CAM files (``<cams_dir>/<image_id>.npz``, :mod:`rca_lightning.pseudo.cam_writer`), for
        the classes the file holds.
    ``attention``: the image's maps in an attention accumulation (the folder of
        :class:`rca_lightning.callbacks.AttentionAccumulationCallback`), for the classes the image is
        tagged with in the dataset, resized bilinearly (``align_corners=False``) to the image size and
        brought to [0, 1] by the rule the accumulation recorded in its index, ``seed_normalisation``
        (:data:`~rca_lightning.pseudo.attention_store.SEED_NORMALISATIONS`: 255 -> 1, or the release's
        per-map min-max), (:func:`attention_maps`). No stage setting changes it: the store says how it is
        read.
    ``max``: the pixel-wise max of both, for the classes of the CAM file.
Seeds of every kind are what a CAM file holds, ``classes`` (K,) and (K, H, W) float32 maps in [0, 1] at the
image size, so they are scored and turned into pseudo masks the same way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rca_lightning.pseudo.attention_store import (
    INDEX_FILE,
    MAX_ATTENTION,
    SEED_NORMALISATIONS,
    index_and_rows,
    load_accumulated_attention,
)
from rca_lightning.pseudo.cam_writer import cam_path, load_cam_file
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput

SEED_KINDS = ("cams", "attention", "max")
MIN_MAX_EPSILON = 1e-8


def check_seed_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`SEED_KINDS`, else InvalidSetting naming the setting and the choices."""
    if kind not in SEED_KINDS:
        raise InvalidSetting(f"seeds={kind!r}: expected one of {list(SEED_KINDS)}")
    return kind


def normalise_attention(maps: torch.Tensor, normalisation: str) -> torch.Tensor:
    """Attention maps on the store's 0..255 scale brought to [0, 1], every map at once.

    Args:
        maps: (K, H, W) float maps of K classes of one image, values in [0, 255].
        normalisation: one of :data:`~rca_lightning.pseudo.attention_store.SEED_NORMALISATIONS` (the store's
            recorded ``seed_normalisation``); ``min_max`` takes the min and max of each class's map over its
            H x W pixels.

    Returns:
        (K, H, W) float in [0, 1]; with ``min_max`` a constant map (a class never written) is all 0.
    """
    if normalisation not in SEED_NORMALISATIONS:
        raise ValueError(f"normalisation={normalisation!r}: expected one of {list(SEED_NORMALISATIONS)}")
    if normalisation == "divide_255":
        return (maps / MAX_ATTENTION).clamp(0.0, 1.0)
    low = maps.amin(dim=(-2, -1), keepdim=True)  # (K, 1, 1)
    high = maps.amax(dim=(-2, -1), keepdim=True)  # (K, 1, 1)
    return (maps - low) / (high - low + MIN_MAX_EPSILON)


def combine_seeds(kind: str, cams: np.ndarray | None, attention: np.ndarray | None) -> np.ndarray:
    """The seeds of ``kind`` from an image's CAMs and attention maps of the same K classes.

    Args:
        kind: one of :data:`SEED_KINDS`.
        cams: (K, H, W) CAMs in [0, 1] (unused, may be None, for ``attention``).
        attention: (K, H, W) attention maps in [0, 1] (:func:`attention_maps`; unused, may be None, for
            ``cams``).

    Returns:
        (K, H, W) float32 seeds: ``cams``, ``attention`` or their pixel-wise max.
    """
    check_seed_kind(kind)
    if kind == "cams":
        return np.asarray(cams, np.float32)
    if kind == "attention":
        return np.asarray(attention, np.float32)
    if cams.shape != attention.shape:
        raise ValueError(f"seeds=max: CAMs {cams.shape} and attention maps {attention.shape} differ in shape")
    return np.maximum(cams, attention).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=4)
def _cached_accumulation(
    directory: str, modified_ns: int | None
) -> tuple[dict[str, int], list[str], np.ndarray, str]:
    image_ids, class_names, attention = load_accumulated_attention(directory, require_complete=True)
    rows = {image_id: row for row, image_id in enumerate(image_ids)}
    return rows, class_names, attention, index_and_rows(directory)[0]["seed_normalisation"]


def _open_accumulation(directory: Path) -> tuple[dict[str, int], list[str], np.ndarray, str]:
    """(image id -> row, class names, read-only uint8 (N, C, S, S) maps, recorded seed normalisation) of a
    complete accumulation, opened once per process and index version."""
    index_path = directory / INDEX_FILE
    modified = index_path.stat().st_mtime_ns if index_path.is_file() else None
    return _cached_accumulation(str(directory.resolve()), modified)


def attention_maps(
    attention_dir: str | os.PathLike,
    image_id: str,
    classes: np.ndarray,
    size: tuple[int, int],
) -> np.ndarray:
    """One image's accumulated maps of some classes, resized (bilinear) to the image size, then normalised by
    the rule the accumulation recorded (its index's ``seed_normalisation``, :func:`normalise_attention`).

    The release resizes each stored map to the image first and min-max normalises the resized map, so the
    min and max are taken at the image's resolution here too (bilinear upsampling seldom lands on a stored
    peak, so the resized map's extremes can lie inside the stored map's).

    Args:
        attention_dir: folder of a complete attention accumulation.
        image_id: the image.
        classes: (K,) class indices (0-based, the accumulation's class order).
        size: (H, W) of the output.

    Returns:
        (K, H, W) float32 in [0, 1]; classes never written are all zero.
    """
    rows, _, attention, normalisation = _open_accumulation(Path(attention_dir))
    if image_id not in rows:
        raise InvalidData(f"{attention_dir}: no image {image_id!r} among the {len(rows)} accumulated images")
    maps = torch.from_numpy(attention[rows[image_id]][np.asarray(classes, np.int64)].astype(np.float32))
    resized = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return normalise_attention(resized, normalisation).numpy()  # (K, H, W)


@dataclass(frozen=True)
class SeedSource:
    """Where the seeds of each image come from (picklable, so pool and DataLoader workers read them).

    Args:
        kind: ``cams``, ``attention`` or ``max`` (see the module docstring).
        cams_dir: folder of the CAM files (needed by ``cams`` and ``max``).
        attention_dir: folder of a complete attention accumulation (needed by ``attention`` and ``max``); its
            index says how its maps become seeds (:attr:`seed_normalisation`).
    """

    kind: str = "cams"
    cams_dir: Path | None = None
    attention_dir: Path | None = None

    def __post_init__(self) -> None:
        check_seed_kind(self.kind)
        for name in ("cams_dir", "attention_dir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.kind != "attention" and self.cams_dir is None:
            raise InvalidSetting(
                f"seeds={self.kind} needs cams_dir=<folder of CAM files written by rca-cams>"
            )
        if self.kind != "cams" and self.attention_dir is None:
            raise InvalidSetting(
                f"seeds={self.kind} needs attention_dir=<folder of an attention accumulation, "
                "<rca-train run>/attention>"
            )

    def check_folders(self) -> None:
        """MissingInput unless the folders this kind reads exist (an accumulation with its index): a check
        that needs no dataset, so a stage runs it first."""
        if self.kind != "attention" and not self.cams_dir.is_dir():
            raise MissingInput(
                f"cams_dir={self.cams_dir} not found: expected a folder of CAM files written by rca-cams"
            )
        if self.kind != "cams":
            expected = "expected the folder of an attention accumulation (<rca-train run>/attention)"
            if not self.attention_dir.is_dir():
                raise MissingInput(f"attention_dir={self.attention_dir} not found: {expected}")
            if not (self.attention_dir / INDEX_FILE).is_file():
                raise MissingInput(f"attention_dir={self.attention_dir} holds no {INDEX_FILE}: {expected}")

    def validate(self, image_ids: Sequence[str], class_names: Sequence[str] | None = None) -> None:
        """Check, before any work, that every image has its seeds.

        Args:
            image_ids: the images that will be read.
            class_names: the dataset's C foreground classes; the accumulation's must equal them.

        Raises:
            InvalidData: an incomplete accumulation, other class names, an image missing from the
                accumulation.
            MissingInput: a missing CAM folder, CAM file or accumulation.
        """
        self.check_folders()
        if self.kind != "attention":
            missing = [image_id for image_id in image_ids if not cam_path(self.cams_dir, image_id).is_file()]
            if missing:
                raise MissingInput(
                    f"{len(missing)} of {len(image_ids)} CAM files are missing in {self.cams_dir}, first: "
                    f"{cam_path(self.cams_dir, missing[0])} (run rca-cams on this split first)"
                )
        if self.kind != "cams":
            rows, names, _, _ = _open_accumulation(self.attention_dir)
            if class_names is not None and list(class_names) != names:
                raise InvalidData(
                    f"{self.attention_dir}: the accumulation's class names {names} differ from the "
                    f"dataset's {list(class_names)}"
                )
            missing = [image_id for image_id in image_ids if image_id not in rows]
            if missing:
                raise InvalidData(
                    f"{self.attention_dir}: {len(missing)} of {len(image_ids)} images are not in the "
                    f"accumulation, first: {missing[0]!r} (expected the accumulation of this split's "
                    "training run)"
                )

    def seeds(
        self, image_id: str, size: tuple[int, int], tags: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One image's seeds.

        Args:
            image_id: the image.
            size: (H, W) of the image; CAM files must have it, attention maps are resized to it.
            tags: (K,) class indices the image is tagged with in the dataset; needed by ``attention``
                (``cams`` and ``max`` take the CAM file's classes).

        Returns:
            ``classes`` (K,) int64 and ``seeds`` (K, H, W) float32 in [0, 1].
        """
        size = tuple(int(side) for side in size)
        if self.kind == "attention":
            if tags is None:
                raise ValueError(
                    f"seeds=attention: no tags given for image {image_id!r} (the dataset's labels)"
                )
            classes = np.asarray(tags, np.int64)
            return classes, self.attention_maps(image_id, classes, size)
        source = cam_path(self.cams_dir, image_id)
        classes, cams = load_cam_file(source)
        if cams.shape[1:] != size:
            raise InvalidData(f"{source}: CAMs of size {cams.shape[1:]}, expected the image's {size}")
        attention = self.attention_maps(image_id, classes, size) if self.kind == "max" else None
        return classes, combine_seeds(self.kind, cams, attention)

    @property
    def seed_normalisation(self) -> str | None:
        """How the accumulation's maps become seeds, as its index records it (``divide_255`` for an index
        older than the setting); None for ``cams``, which reads no accumulation."""
        return None if self.kind == "cams" else _open_accumulation(self.attention_dir)[3]

    def attention_maps(self, image_id: str, classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(K, H, W) float32 seeds in [0, 1]: :func:`attention_maps` of ``attention_dir``."""
        return attention_maps(self.attention_dir, image_id, classes, size)


def as_seed_source(seeds: SeedSource | str | os.PathLike) -> SeedSource:
    """``seeds`` itself, or a folder of CAM files read as ``SeedSource("cams", folder)``."""
    return seeds if isinstance(seeds, SeedSource) else SeedSource("cams", Path(seeds))

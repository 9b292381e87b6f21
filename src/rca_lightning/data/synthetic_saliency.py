"""Saliency maps of the built-in dataset: the union of its objects, made as imperfect as a real detector's.

EPS-style methods train with an off-the-shelf saliency map per image (PFAN maps on VOC), which misses some
objects, bleeds over or falls short of the others' edges, and fires on salient background. The built-in
dataset's maps are derived from its instance masks (``SegmentationObject``) with those errors:

- each object is missed entirely with probability ``MISS_PROBABILITY``; the others are grown or shrunk by up
  to ``BOUNDARY_SHIFT`` of their equivalent radius and drawn at a strength in ``OBJECT_STRENGTH``;
- on average ``FALSE_BLOBS_PER_IMAGE`` salient blobs (ellipses) appear where no object is;
- edges are soft (a Gaussian blur of ``EDGE_BLUR`` of the image side) and a little noise is added.

Binarised at 0.5, the maps have an IoU of about 0.7 with the true foreground (over the dataset, border-band
pixels left out); :func:`write_saliency_maps` measures it, logs it and returns it for the complete-marker.

The imperfections come from a random generator of their own, seeded by (dataset seed, ``_SALIENCY_STREAM``,
image id), never from the rendering stream: images, masks and annotations of a seed are byte-identical with
or without maps, and a dataset written before the maps existed gets them from its files on disk
(:func:`add_saliency_maps`), without drawing anything again.

Output: ``root/SaliencyImages/<id>.png``, grey uint8 PNGs, 255 = salient; the complete-marker's
``"saliency"`` entry records their version and measured IoU.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.data.voc_layout import read_split_ids, split_file_path
from rca_lightning.utils.atomic import write_bytes_atomically

log = logging.getLogger(__name__)

SALIENCY_FOLDER = "SaliencyImages"
SALIENCY_VERSION = 1
MARKER_KEY = "saliency"
# Marker states (``marker_state``).
COMPLETE, IMAGES_ONLY = "complete", "images only"

MISS_PROBABILITY = 0.1
BOUNDARY_SHIFT = 0.2
BOUNDARY_SHIFT_PIXELS = 1.5
OBJECT_STRENGTH = (0.7, 1.0)
FALSE_BLOBS_PER_IMAGE = 0.6
BLOB_RADIUS = (0.05, 0.14)  # of the image side
BLOB_STRENGTH = (0.6, 1.0)
EDGE_BLUR = (0.006, 0.02)  # Gaussian sigma, of the image side
NOISE_STD = 0.03
BINARY_THRESHOLD = 0.5
# Second entry of the saliency generators' seeds; the rendering seeds are (seed, split 0 or 1, index).
_SALIENCY_STREAM = 5_411_170


def saliency_rng(seed: int, image_id: str) -> np.random.Generator:
    """The generator of one image's imperfections (independent of the rendering stream and of the order)."""
    return np.random.default_rng([seed, _SALIENCY_STREAM, zlib.crc32(image_id.encode())])


def _grown_or_shrunk(region: np.ndarray, shift: float) -> np.ndarray:
    """``region`` grown (``shift`` > 0) or shrunk by ``|shift|`` pixels, through its signed distance.

    Args:
        region: (H, W) bool.
        shift: pixels, any real number.
    """
    inside = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    signed = inside - outside  # (H, W) >= 1 inside, <= -1 outside
    return signed > 0.5 - shift


def imperfect_saliency(
    object_mask: np.ndarray, rng: np.random.Generator, noise_std: float = NOISE_STD
) -> np.ndarray:
    """A saliency map of one image from its instance mask (see the module docstring).

    Args:
        object_mask: (H, W) uint8 instance ids, 0 background, 255 the border band.
        rng: this image's generator (``saliency_rng``).
        noise_std: standard deviation of the added noise (0..1 scale); 0 gives smooth maps that compress
            as well as a detector's (the real-size sets).

    Returns:
        (H, W) uint8 saliency, 255 = salient.
    """
    height, width = object_mask.shape
    side = float(max(height, width))
    band = object_mask == IGNORE_INDEX
    near = np.ones((3, 3), np.uint8)
    saliency = np.zeros((height, width), np.float32)
    instances = [value for value in np.unique(object_mask).tolist() if value not in (0, IGNORE_INDEX)]
    for instance in instances:  # a handful of objects per image
        region = object_mask == instance
        region |= band & cv2.dilate(region.astype(np.uint8), near).astype(bool)  # its side of the band
        missed = rng.random() < MISS_PROBABILITY
        radius = np.sqrt(region.sum() / np.pi)
        # The fixed term in pixels: the border band (left out of the IoU) would otherwise hide more of the
        # shift on smaller images.
        shift = rng.uniform(-1.0, 1.0) * (BOUNDARY_SHIFT * radius + BOUNDARY_SHIFT_PIXELS)
        strength = rng.uniform(*OBJECT_STRENGTH)
        if not missed:
            np.maximum(saliency, strength * _grown_or_shrunk(region, shift), out=saliency)
    for _ in range(rng.poisson(FALSE_BLOBS_PER_IMAGE)):
        blob = np.zeros_like(saliency)
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = tuple(max(1, int(round(axis))) for axis in rng.uniform(*BLOB_RADIUS, 2) * side)
        angle, blob_strength = float(rng.uniform(0, 180)), float(rng.uniform(*BLOB_STRENGTH))
        cv2.ellipse(blob, centre, axes, angle, 0, 360, blob_strength, thickness=-1)
        np.maximum(saliency, blob, out=saliency)
    saliency = cv2.GaussianBlur(saliency, (0, 0), rng.uniform(*EDGE_BLUR) * side)
    if noise_std:
        saliency += rng.normal(0.0, noise_std, saliency.shape).astype(np.float32)
    return np.clip(saliency * 255.0 + 0.5, 0, 255).astype(np.uint8)


def smooth_saliency_png(object_mask: np.ndarray, seed: int, image_id: str) -> tuple[bytes, tuple[int, int]]:
    """A real-size set's map of one image, without noise (it compresses as a detector's does), as grey PNG
    bytes, and its (intersection, union) with the true foreground (``foreground_overlap``).

    Args:
        object_mask: (H, W) uint8 instance ids, 0 background, 255 a border band (or none).
        seed: the dataset's seed; ``image_id``: the image's id (``saliency_rng``).
    """
    saliency = imperfect_saliency(object_mask, saliency_rng(seed, image_id), noise_std=0.0)
    ok, png = cv2.imencode(".png", saliency)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for the saliency map of {image_id}")
    return png.tobytes(), foreground_overlap(object_mask, saliency)


def foreground_overlap(object_mask: np.ndarray, saliency: np.ndarray) -> tuple[int, int]:
    """(intersection, union) of the map binarised at ``BINARY_THRESHOLD`` and the true foreground.

    Args:
        object_mask: (H, W) uint8 instance ids, 0 background, 255 the border band (left out).
        saliency: (H, W) uint8 map.
    """
    scored = object_mask != IGNORE_INDEX
    foreground = (object_mask > 0) & scored
    salient = (saliency.astype(np.float32) / 255.0 > BINARY_THRESHOLD) & scored
    return int((foreground & salient).sum()), int((foreground | salient).sum())


def foreground_iou(overlaps: Sequence[Sequence[int]]) -> float:
    """The dataset-level IoU of maps with the true foreground from each image's (intersection, union)."""
    totals = np.asarray(overlaps, np.int64).reshape(-1, 2).sum(axis=0)  # (2,)
    return round(float(totals[0] / max(totals[1], 1)), 4)


def write_saliency_maps(dataset_root: str | os.PathLike, seed: int, destination: Path | None = None) -> dict:
    """Write a map for every image of ``trainval`` from its instance mask; log and return their IoU.

    Args:
        dataset_root: a generated dataset (its ``SegmentationObject`` and split lists are read).
        seed: the generator's seed.
        destination: folder of the maps (default ``dataset_root/SaliencyImages``, created).

    Returns:
        The complete-marker's record: version, folder, threshold, and the dataset-level IoU of the
        binarised maps with the true foreground.
    """
    dataset_root = Path(dataset_root)
    destination = dataset_root / SALIENCY_FOLDER if destination is None else destination
    destination.mkdir(exist_ok=True)
    intersection = union = 0
    image_ids = read_split_ids(split_file_path(dataset_root, "trainval"))
    for image_id in image_ids:
        with Image.open(dataset_root / "SegmentationObject" / f"{image_id}.png") as png:
            object_mask = np.array(png, dtype=np.uint8)  # (H, W) palette indices = instance ids
        saliency = imperfect_saliency(object_mask, saliency_rng(seed, image_id))
        Image.fromarray(saliency, mode="L").save(destination / f"{image_id}.png", optimize=False)
        shared, either = foreground_overlap(object_mask, saliency)
        intersection, union = intersection + shared, union + either
    iou = intersection / max(union, 1)
    log.info(
        "Built-in saliency maps of %d images: IoU %.3f with the true foreground (binarised at %.1f)",
        len(image_ids),
        iou,
        BINARY_THRESHOLD,
    )
    return {
        "version": SALIENCY_VERSION,
        "folder": SALIENCY_FOLDER,
        "threshold": BINARY_THRESHOLD,
        "foreground_iou": round(iou, 4),
    }


def marker_state(marker: Path, settings: dict) -> str | None:
    """What the complete-marker says of its folder for a generator with ``settings``.

    Returns:
        ``COMPLETE``: images of these settings and current saliency maps; ``IMAGES_ONLY``: images of these
        settings, saliency maps missing or of another version (a folder generated before they existed);
        None: no finished dataset of these settings.
    """
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or {k: v for k, v in recorded.items() if k != MARKER_KEY} != settings:
        return None
    record = recorded.get(MARKER_KEY)
    current = isinstance(record, dict) and record.get("version") == SALIENCY_VERSION
    return COMPLETE if current and (marker.parent / SALIENCY_FOLDER).is_dir() else IMAGES_ONLY


def marker_bytes(settings: dict, saliency_record: dict) -> bytes:
    """The complete-marker's content: the generator settings and the saliency maps' record."""
    return (json.dumps({**settings, MARKER_KEY: saliency_record}, indent=2) + "\n").encode()


def add_saliency_maps(root: Path, seed: int, marker: Path, settings: dict) -> None:
    """Give a finished dataset (current) saliency maps without touching its images, masks or annotations.

    The maps are written to a temporary folder in ``root`` and renamed to ``SaliencyImages`` (replacing
    older ones); then the marker is rewritten, atomically, with their record.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{SALIENCY_FOLDER}.tmp-", dir=root))
    try:
        record = write_saliency_maps(root, seed, destination=staging)
        target = root / SALIENCY_FOLDER
        if target.exists():  # maps of another version: move them aside first
            retired = Path(tempfile.mkdtemp(prefix=f".{SALIENCY_FOLDER}.old-", dir=root))
            os.replace(target, retired / SALIENCY_FOLDER)
            shutil.rmtree(retired, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if marker_state(marker, settings) != COMPLETE:  # else another process finished first
                raise
            return
        write_bytes_atomically(marker, marker_bytes(settings, record))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""Score seeds and pseudo masks against ground truth: one dataset-level confusion matrix, 255 ignored.

Seeds (CAM files, accumulated attention or their max, :mod:`rca_lightning.pseudo.seed_sources`) are scored
over a sweep of background thresholds (a pixel is its top tagged class when that score exceeds the
threshold, else background) with :class:`rca_lightning.metrics.CAMThresholdSweep`; pseudo masks are scored
where they are not 255, and the fraction of ground-truth pixels they ignore is reported. Every per-class IoU
comes with what it covers: the images whose ground truth holds the class and the ground-truth pixels it was
scored on (the confusion matrix's row sum). Files are read in DataLoader workers; nothing but the confusion
matrices and the per-class image counts is kept.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassConfusionMatrix
from tqdm import tqdm

from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.imaging.palette_png import read_mask_png
from rca_lightning.metrics import CAMThresholdSweep, ClassImageCount, iou_from_confusion
from rca_lightning.pseudo.pseudo_mask_writer import mask_path
from rca_lightning.pseudo.seed_sources import SeedSource, as_seed_source
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from rca_lightning.utils.ranks import Ranks


def sweep_thresholds(start: float = 0.0, stop: float = 0.6, step: float = 0.01) -> torch.Tensor:
    """(T,) thresholds start, start + step, ..., stop (inclusive, without float drift)."""
    if step <= 0 or stop < start:
        raise InvalidSetting(
            f"thresholds=[{start}, {stop}, {step}]: expected [start, stop, step] with start <= stop "
            "and step > 0"
        )
    count = round((stop - start) / step) + 1
    return (torch.arange(count, dtype=torch.float64) * step + start).float()


def _check_same_size(prediction: np.ndarray, target: np.ndarray, source: Path, target_path: Path) -> None:
    if prediction.shape[-2:] != target.shape:
        raise InvalidData(
            f"{source}: size {prediction.shape[-2:]}, expected that of ground truth {target_path} "
            f"{target.shape}"
        )


class _CAMAndTarget(Dataset):
    """(scores (C, H, W) with zeros for untagged classes, target (H, W)) per image.

    Args:
        source: where the seeds come from.
        image_ids: the N images.
        targets: their ground-truth PNGs.
        num_classes: C.
        labels: (N, C) multi-hot image labels (the tags of ``attention`` seeds), or None.
    """

    def __init__(
        self,
        source: SeedSource,
        image_ids: Sequence[str],
        targets: Sequence[Path],
        num_classes: int,
        labels: np.ndarray | None = None,
    ):
        self.source, self.image_ids, self.targets, self.num_classes, self.labels = (
            source,
            image_ids,
            targets,
            num_classes,
            labels,
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        target = read_mask_png(self.targets[index])
        tags = None if self.labels is None else np.flatnonzero(self.labels[index])
        classes, seeds = self.source.seeds(self.image_ids[index], target.shape, tags)  # (K,), (K, H, W)
        scores = np.zeros((self.num_classes, *target.shape), np.float32)
        scores[classes] = seeds
        return torch.from_numpy(scores), torch.from_numpy(target.astype(np.int64))


class _MaskAndTarget(Dataset):
    """(pseudo mask (H, W), target (H, W)) per image."""

    def __init__(self, masks_dir: Path, image_ids: Sequence[str], targets: Sequence[Path], num_classes: int):
        self.masks_dir, self.image_ids, self.targets, self.num_classes = (
            masks_dir,
            image_ids,
            targets,
            num_classes,
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = mask_path(self.masks_dir, self.image_ids[index])
        mask = read_mask_png(source)
        target = read_mask_png(self.targets[index])
        _check_same_size(mask, target, source, self.targets[index])
        invalid = (mask > self.num_classes) & (mask != IGNORE_INDEX)
        if invalid.any():
            raise InvalidData(
                f"{source}: value {int(mask[invalid][0])}, expected class indices "
                f"0..{self.num_classes} or 255"
            )
        return torch.from_numpy(mask.astype(np.int64)), torch.from_numpy(target.astype(np.int64))


def _check_files_exist(paths: Sequence[Path], what: str) -> None:
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        raise MissingInput(f"{len(missing)} of {len(paths)} {what} are missing, first: {missing[0]}")


def _per_class(
    iou: torch.Tensor, confusion: torch.Tensor, images: torch.Tensor, class_names: Sequence[str]
) -> dict[str, dict]:
    """The per-class entries of a record: IoU (None where the class is in neither prediction nor ground
    truth), images and ground-truth pixels behind it; ``iou`` and ``images`` (K,), ``confusion`` (K, K)."""
    names = ["background", *class_names]
    return {
        "per_class_iou": {
            name: (None if math.isnan(value) else value)
            for name, value in zip(names, iou.tolist(), strict=True)
        },
        "per_class_images": dict(zip(names, images.long().tolist(), strict=True)),
        "per_class_pixels": dict(zip(names, confusion.sum(-1).long().tolist(), strict=True)),
    }


def _loader(dataset: Dataset, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)


def evaluate_cams(
    seeds: SeedSource | str | os.PathLike,
    image_ids: Sequence[str],
    target_paths: Sequence[str | os.PathLike],
    class_names: Sequence[str],
    thresholds: torch.Tensor | None = None,
    num_workers: int = 0,
    progress: bool = True,
    labels: np.ndarray | None = None,
    ranks: Ranks | None = None,
) -> dict:
    """Seed (CAM) mIoU over a background-threshold sweep.

    Args:
        seeds: where the seeds come from, or a folder of CAM files.
        image_ids: the N images to score.
        target_paths: their ground-truth PNGs (0 background, 1..C, 255 ignored).
        class_names: the C foreground classes.
        thresholds: (T,) increasing background thresholds (default 0.00..0.60 step 0.01).
        num_workers: DataLoader workers reading the files.
        progress: show a progress bar.
        labels: (N, C) multi-hot image labels, the tags of ``attention`` seeds (needed by those).
        ranks: the processes sharing the images (:func:`~rca_lightning.utils.ranks.stage_ranks`): each scores
            its share and the pixel counts are summed over them (every rank gets the whole result).

    Returns:
        ``best_threshold``, ``miou`` (at the best threshold), ``per_class_iou`` (name -> IoU, None where the
        class is in neither prediction nor ground truth), ``per_class_images`` (name -> the images whose
        ground truth holds the class; 0: absent from the split), ``per_class_pixels`` (name -> its
        ground-truth pixels, the confusion's row sum), ``confusion`` (at the best threshold: pixel counts,
        rows ground truth, columns prediction, background first), ``sweep`` ({threshold: mIoU}),
        ``num_images``.
    """
    thresholds = (
        sweep_thresholds() if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float32)
    )
    source = as_seed_source(seeds)
    target_paths = [Path(path) for path in target_paths]
    source.validate(image_ids, class_names)
    _check_files_exist(target_paths, "ground-truth masks")
    ranks = ranks or Ranks()
    sweep = CAMThresholdSweep(len(class_names), thresholds, ignore_index=IGNORE_INDEX, **ranks.metric_sync())
    images = ClassImageCount(len(class_names) + 1, IGNORE_INDEX, **ranks.metric_sync())
    share = ranks.shard(range(len(image_ids)))
    dataset = _CAMAndTarget(
        source,
        [image_ids[i] for i in share],
        [target_paths[i] for i in share],
        len(class_names),
        None if labels is None else labels[share],
    )
    for scores, target in tqdm(
        _loader(dataset, num_workers), total=len(dataset), desc="CAM eval", disable=not progress
    ):
        sweep.update(scores[None], target[None])
        images.update(target[None])
    result = sweep.compute()
    return {
        "best_threshold": round(float(result["best_threshold"]), 6),
        "miou": float(result["best_miou"]),
        **_per_class(result["best_iou"], result["best_confusion"], images.compute(), class_names),
        "confusion": result["best_confusion"].long().tolist(),
        "sweep": {
            f"{t:.4f}": float(m) for t, m in zip(thresholds.tolist(), result["miou"].tolist(), strict=True)
        },
        "num_images": len(image_ids),
    }


def evaluate_masks(
    masks_dir: str | os.PathLike,
    image_ids: Sequence[str],
    target_paths: Sequence[str | os.PathLike],
    class_names: Sequence[str],
    num_workers: int = 0,
    progress: bool = True,
    ranks: Ranks | None = None,
) -> dict:
    """Pseudo-mask mIoU, scored where neither the mask nor the ground truth is 255 (``ranks``: as
    :func:`evaluate_cams`).

    Returns:
        ``miou``, ``per_class_iou``, ``per_class_images``, ``per_class_pixels`` (as :func:`evaluate_cams`:
        the pixels are those scored, the masks' 255 left out), ``confusion`` (pixel counts of the scored
        pixels, rows ground truth, columns prediction, background first), ``ignored_fraction`` (of the valid
        ground-truth pixels, the share the masks mark 255), ``miou_ignored_as_background`` (the masks' 255
        read as background) and ``num_images``.
    """
    target_paths = [Path(path) for path in target_paths]
    _check_files_exist(
        [mask_path(masks_dir, image_id) for image_id in image_ids], f"pseudo masks in {masks_dir}"
    )
    _check_files_exist(target_paths, "ground-truth masks")
    ranks = ranks or Ranks()
    num_labels = len(class_names) + 1
    scored = MulticlassConfusionMatrix(num_labels, validate_args=False, **ranks.metric_sync())
    as_background = MulticlassConfusionMatrix(num_labels, validate_args=False, **ranks.metric_sync())
    images = ClassImageCount(num_labels, IGNORE_INDEX, **ranks.metric_sync())
    valid_pixels = ignored_pixels = 0
    share = ranks.shard(range(len(image_ids)))
    dataset = _MaskAndTarget(
        Path(masks_dir), [image_ids[i] for i in share], [target_paths[i] for i in share], len(class_names)
    )
    for mask, target in tqdm(
        _loader(dataset, num_workers), total=len(dataset), desc="mask eval", disable=not progress
    ):
        valid = target != IGNORE_INDEX
        ignored = mask == IGNORE_INDEX
        keep = valid & ~ignored
        scored.update(mask[keep], target[keep])
        as_background.update(mask[valid].masked_fill(ignored[valid], 0), target[valid])
        images.update(target[None])
        valid_pixels += int(valid.sum())
        ignored_pixels += int((valid & ignored).sum())
    valid_pixels, ignored_pixels = ranks.sum([valid_pixels, ignored_pixels])
    confusion = scored.compute()  # (K, K)
    iou = iou_from_confusion(confusion)
    return {
        "miou": float(iou.nanmean()),
        **_per_class(iou, confusion, images.compute(), class_names),
        "confusion": confusion.long().tolist(),
        "ignored_fraction": ignored_pixels / max(valid_pixels, 1),
        "miou_ignored_as_background": float(iou_from_confusion(as_background.compute()).nanmean()),
        "num_images": len(image_ids),
    }

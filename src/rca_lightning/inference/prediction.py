"""``rca-predict``'s work: masks of image files, written per image, resumable, with a per-image record.

For each input ``<stem>.<ext>`` the output folder gets ``<stem>.png`` (palette PNG at the input's size, the
dataset's colours) and, with ``overlay``, ``<stem>_overlay.jpg`` (the classes blended over the image).
Each file is written atomically and the PNG last, so an image is finished when its PNG decodes: a rerun
skips finished images. ``predictions.jsonl`` (one line per finished input: its size and the fraction of
its pixels each class covers) is rewritten at the end from every finished mask.

Inputs are never replaced: before anything is written, an output folder in which an output file would be one
of the inputs is refused (:func:`check_inputs_kept`). An image of more than ``max_pixels`` pixels is refused
from its header, before decoding, like an unreadable one (a warning naming it, and it is skipped). Images are
decoded in batches of at most ``batch_size`` images and ``BATCH_PIXELS`` pixels, so an image above
``BATCH_PIXELS`` is decoded and segmented alone: large images are never held a batch at a time.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from rca_lightning.imaging.drawing import class_overlay
from rca_lightning.imaging.image_arrays import count_pixels, read_rgb_file
from rca_lightning.imaging.palette_png import read_mask_png, write_palette_png
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.utils.atomic import path_inside, write_bytes_atomically
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput, UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
RECORDS_FILE = "predictions.jsonl"
SUMMARY_FILE = "predict.json"
# Pixels of the images decoded at once (3 bytes each as uint8, 12 as the network's float input): a batch of
# VOC-sized images (0.19 megapixels) is not cut short, an image of 8 megapixels or more goes alone.
BATCH_PIXELS = 8_000_000
# Refused from the header beyond this (conf/predict.yaml's max_pixels): 50 megapixels, 150 MB decoded.
DEFAULT_MAX_PIXELS = 50_000_000


def list_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """The image files ``inputs`` names: a folder (its image files, not recursive), a file, or a glob
    pattern (``**`` recursive); several of them as a list. Sorted within each, duplicates dropped.

    Raises:
        MissingInput: an entry matches nothing, or no image file is found at all.
    """
    entries = [inputs] if isinstance(inputs, str) else list(inputs)
    found: dict[Path, None] = {}
    for entry in entries:
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(str(path)):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        else:
            raise MissingInput(
                f"inputs={entry}: not found; expected an image file, a folder or a glob pattern"
            )
        if not matches:
            raise MissingInput(f"inputs={entry}: no image file ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
        found.update(dict.fromkeys(matches))
    return list(found)


def output_stems(paths: Sequence[Path]) -> list[str]:
    """Each input's output name (its file stem); InvalidSetting naming two inputs that would collide."""
    first: dict[str, Path] = {}
    for path in paths:
        other = first.setdefault(path.stem, path)
        if other != path:
            raise InvalidSetting(
                f"inputs: {other} and {path} would both write {path.stem}.png; expected inputs with distinct "
                "file names (predict them into separate output folders)"
            )
    return [path.stem for path in paths]


def output_names(stems: Sequence[str], overlay: bool) -> list[str]:
    """The files ``predict_files`` writes into its output folder: ``<stem>.png`` (and ``<stem>_overlay.jpg``)
    per input, and ``predictions.jsonl``."""
    overlays = [f"{stem}_overlay.jpg" for stem in stems] if overlay else []
    return [*(f"{stem}.png" for stem in stems), *overlays, RECORDS_FILE]


def check_inputs_kept(paths: Sequence[Path], output_dir: Path, names: Iterable[str]) -> None:
    """Raise ``InvalidSetting`` naming the input and the output folder where writing ``output_dir / name``
    would replace one of the inputs ``paths`` (the same file: path, link or hard link); nothing is written.

    Args:
        paths: the input files.
        output_dir: the output folder (need not exist).
        names: the files that will be written there.
    """
    inputs: dict[tuple[int, int], Path] = {}
    for path in paths:
        identity = _file_identity(path)
        if identity is not None:
            inputs[identity] = path
    for name in names:
        replaced = inputs.get(_file_identity(output_dir / name))
        if replaced is not None:
            raise InvalidSetting(
                f"output_dir={output_dir}: writing {name} there would replace the input {replaced}; "
                "expected an output folder that holds none of the inputs"
            )


def check_output_folder(output_dir: Path, run_dir: Path, kept: Sequence[Path], names: Iterable[str]) -> None:
    """Refuse, before anything is written, an output folder that is (inside) the run folder read, or in
    which writing ``names`` would replace a file of ``kept`` (the inputs, the checkpoint): InvalidSetting.

    A run folder is its own stages' (their settings, checkpoints and state files); masks written there would
    be mixed with them, or replace them.
    """
    if output_dir.resolve().is_relative_to(run_dir.resolve()):
        raise InvalidSetting(
            f"output_dir={output_dir} is inside run_dir={run_dir}; expected an output folder outside the run "
            "folder, whose files rca-predict reads"
        )
    check_inputs_kept(kept, output_dir, names)


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, what ``os.path.samefile`` compares; None where there is none."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def pixel_batches(pixel_counts: dict[int, int], batch_size: int, batch_pixels: int) -> list[list[int]]:
    """Consecutive batches of the inputs ``pixel_counts`` lists (index -> pixels), in order: at most
    ``batch_size`` images and ``batch_pixels`` pixels each, an image with more pixels alone."""
    batches: list[list[int]] = []
    batch: list[int] = []
    held = 0
    for index, pixels in pixel_counts.items():
        if batch and (len(batch) == batch_size or held + pixels > batch_pixels):
            batches.append(batch)
            batch, held = [], 0
        batch.append(index)
        held += pixels
    if batch:
        batches.append(batch)
    return batches


class _ImageFiles(Dataset):
    """Decoded input images by index; an unreadable one gives its error message instead of pixels."""

    def __init__(self, paths: Sequence[Path], max_pixels: int) -> None:
        self.paths, self.max_pixels = list(paths), max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, read_rgb_file(self.paths[index], self.max_pixels), None
        except UserError as error:
            return index, None, str(error)


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def mask_record(path: Path, mask: np.ndarray, class_names: Sequence[str]) -> dict:
    """One line of ``predictions.jsonl``: the input, its mask file, size and each class's pixel fraction."""
    names = ["background", *class_names]
    counts = np.bincount(mask.ravel(), minlength=256)[: len(names)]
    classes = {names[value]: round(float(counts[value]) / mask.size, 6) for value in np.flatnonzero(counts)}
    return {
        "input": str(path),
        "mask": f"{path.stem}.png",
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "classes": classes,
    }


@dataclass
class PredictionSummary:
    """What one ``predict_files`` call did. ``failed`` holds (input, reason) of unreadable inputs."""

    total: int
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Images written per second of the run (decoding, network and writing included)."""
        return self.written / self.seconds if self.written and self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "written": self.written,
            "skipped": self.skipped,
            "failed": [{"input": path, "reason": reason} for path, reason in self.failed],
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
        }


def check_max_pixels(max_pixels: object) -> int:
    """``max_pixels`` if it is a positive integer; else ``InvalidSetting`` naming it."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise InvalidSetting(
            f"max_pixels={max_pixels}: expected a positive number of pixels (default {DEFAULT_MAX_PIXELS}); "
            "images with more are refused from their header, before decoding"
        )
    return max_pixels


def predict_files(
    segmenter: Segmenter,
    paths: Sequence[Path],
    output_dir: Path,
    overlay: bool = False,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PredictionSummary:
    """Write the masks of ``paths`` into ``output_dir`` (module docstring); unreadable inputs and those of
    more than ``max_pixels`` pixels are logged by name and skipped. Images of one size in a loaded batch go
    through the network together.

    Args:
        segmenter: the trained network.
        paths: the input files.
        output_dir: where the masks go.
        overlay: also write ``<stem>_overlay.jpg``.
        batch_size: images decoded per step (and at most per forward pass), within ``BATCH_PIXELS``.
        num_workers: DataLoader workers decoding the images.
        progress: a progress bar (None: on a terminal only).
        max_pixels: the largest image (width x height) read; a larger one is refused from its header.

    Raises:
        InvalidSetting: a setting is out of range, or an output would replace an input (nothing written).
    """
    if batch_size < 1:
        raise InvalidSetting(f"batch_size={batch_size}: expected a positive number of images")
    check_max_pixels(max_pixels)
    stems = output_stems(paths)
    check_inputs_kept(paths, output_dir, output_names(stems, overlay))
    output_dir.mkdir(parents=True, exist_ok=True)

    def finished_mask(index: int) -> np.ndarray | None:
        """The mask an earlier run finished (its PNG decodes, its overlay exists when asked), else None."""
        if overlay and not path_inside(output_dir, f"{stems[index]}_overlay.jpg").is_file():
            return None
        try:
            return read_mask_png(path_inside(output_dir, f"{stems[index]}.png"))
        except (InvalidData, MissingInput):
            return None

    records: dict[int, dict] = {}  # finished by an earlier run: the record from its mask, read once
    for index in range(len(paths)):
        mask = finished_mask(index)
        if mask is not None:
            records[index] = mask_record(paths[index], mask, segmenter.class_names)
    pending = [index for index in range(len(paths)) if index not in records]
    summary = PredictionSummary(total=len(paths), skipped=len(records))

    def skip(index: int, error: str) -> None:
        log.warning("%s; skipped", error)
        summary.failed.append((str(paths[index]), error))

    start = time.perf_counter()
    pixel_counts: dict[int, int] = {}  # index -> pixels, from the header: nothing decoded yet
    for index in pending:
        try:
            pixel_counts[index] = count_pixels(paths[index], max_pixels)
        except UserError as error:
            skip(index, str(error))
    loader = DataLoader(
        _ImageFiles(paths, max_pixels),
        batch_sampler=pixel_batches(pixel_counts, batch_size, BATCH_PIXELS),
        num_workers=num_workers,
        collate_fn=list,
    )
    with tqdm(
        total=len(pending),
        desc="rca-predict",
        unit="image",
        disable=None if progress is None else not progress,
    ) as bar:
        bar.update(len(pending) - len(pixel_counts))
        for batch in loader:
            by_size: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
            for index, pixels, error in batch:  # per image: its file was read (or not) on its own
                if error is not None:
                    skip(index, error)
                else:
                    by_size[pixels.shape[:2]].append((index, pixels))
            for group in by_size.values():
                masks = segmenter.predict_batch(torch.from_numpy(np.stack([pixels for _, pixels in group])))
                for (index, pixels), mask in zip(group, masks.numpy(), strict=True):
                    if overlay:
                        write_bytes_atomically(
                            path_inside(output_dir, f"{stems[index]}_overlay.jpg"),
                            jpeg_bytes(class_overlay(pixels, mask)),
                        )
                    # last: marks the image done
                    write_palette_png(path_inside(output_dir, f"{stems[index]}.png"), mask)
                    records[index] = mask_record(paths[index], mask, segmenter.class_names)
            summary.written = len(records) - summary.skipped
            bar.update(len(batch))
    summary.seconds = time.perf_counter() - start
    lines = "".join(json.dumps(records[index]) + "\n" for index in sorted(records))
    write_bytes_atomically(output_dir / RECORDS_FILE, lines.encode())
    return summary


__all__ = [
    "BATCH_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "RECORDS_FILE",
    "SUMMARY_FILE",
    "PredictionSummary",
    "check_inputs_kept",
    "check_max_pixels",
    "check_output_folder",
    "list_inputs",
    "mask_record",
    "output_names",
    "output_stems",
    "jpeg_bytes",
    "pixel_batches",
    "predict_files",
]

"""``rca-predict``'s work: masks of image files, written per image, resumable, with a per-image record.

For each input ``<stem>.<ext>`` the output folder gets ``<stem>.png`` (palette PNG at the input's size, the
dataset's colours) and, with ``overlay``, ``<stem>_overlay.jpg`` (the classes blended over the image).
Each file is written atomically and the PNG last, so an image is finished when its PNG decodes: a rerun
skips finished images. ``predictions.jsonl`` (one line per finished input: its size and the fraction of
its pixels each class covers) is rewritten at the end from every finished mask.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from rca_lightning.inference.drawing import class_overlay
from rca_lightning.inference.image_arrays import read_rgb_file
from rca_lightning.inference.palette_png import read_mask_png, write_palette_png
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.utils.atomic import write_bytes_atomically
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput, UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
RECORDS_FILE = "predictions.jsonl"


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


class _ImageFiles(Dataset):
    """Decoded input images; an unreadable one gives its error message instead of pixels."""

    def __init__(self, paths: Sequence[Path], indices: Sequence[int]) -> None:
        self.paths, self.indices = list(paths), list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[int, np.ndarray | None, str | None]:
        index = self.indices[item]
        try:
            return index, read_rgb_file(self.paths[index]), None
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


def predict_files(
    segmenter: Segmenter,
    paths: Sequence[Path],
    output_dir: Path,
    overlay: bool = False,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool | None = None,
) -> PredictionSummary:
    """Write the masks of ``paths`` into ``output_dir`` (module docstring); unreadable inputs are logged by
    name and skipped. Images of one size in a loaded batch go through the network together.

    Args:
        segmenter: the trained network.
        paths: the input files.
        output_dir: where the masks go.
        overlay: also write ``<stem>_overlay.jpg``.
        batch_size: images decoded per step (and at most per forward pass).
        num_workers: DataLoader workers decoding the images.
        progress: a progress bar (None: on a terminal only).
    """
    if batch_size < 1:
        raise InvalidSetting(f"batch_size={batch_size}: expected a positive number of images")
    stems = output_stems(paths)
    output_dir.mkdir(parents=True, exist_ok=True)

    def finished_mask(index: int) -> np.ndarray | None:
        """The mask an earlier run finished (its PNG decodes, its overlay exists when asked), else None."""
        if overlay and not (output_dir / f"{stems[index]}_overlay.jpg").is_file():
            return None
        try:
            return read_mask_png(output_dir / f"{stems[index]}.png")
        except (InvalidData, MissingInput):
            return None

    records: dict[int, dict] = {}  # finished by an earlier run: the record from its mask, read once
    for index in range(len(paths)):
        mask = finished_mask(index)
        if mask is not None:
            records[index] = mask_record(paths[index], mask, segmenter.class_names)
    pending = [index for index in range(len(paths)) if index not in records]
    summary = PredictionSummary(total=len(paths), skipped=len(records))
    loader = DataLoader(
        _ImageFiles(paths, pending), batch_size=batch_size, num_workers=num_workers, collate_fn=list
    )
    start = time.perf_counter()
    with tqdm(
        total=len(pending),
        desc="rca-predict",
        unit="image",
        disable=None if progress is None else not progress,
    ) as bar:
        for batch in loader:
            by_size: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
            for index, pixels, error in batch:  # per image: its file was read (or not) on its own
                if error is not None:
                    log.warning("%s; skipped", error)
                    summary.failed.append((str(paths[index]), error))
                else:
                    by_size[pixels.shape[:2]].append((index, pixels))
            for group in by_size.values():
                masks = segmenter.predict_batch(torch.from_numpy(np.stack([pixels for _, pixels in group])))
                for (index, pixels), mask in zip(group, masks.numpy(), strict=True):
                    if overlay:
                        write_bytes_atomically(
                            output_dir / f"{stems[index]}_overlay.jpg",
                            jpeg_bytes(class_overlay(pixels, mask)),
                        )
                    write_palette_png(output_dir / f"{stems[index]}.png", mask)  # last: marks the image done
                    records[index] = mask_record(paths[index], mask, segmenter.class_names)
            summary.written = len(records) - summary.skipped
            bar.update(len(batch))
    summary.seconds = time.perf_counter() - start
    lines = "".join(json.dumps(records[index]) + "\n" for index in sorted(records))
    write_bytes_atomically(output_dir / RECORDS_FILE, lines.encode())
    return summary


__all__ = [
    "IMAGE_SUFFIXES",
    "RECORDS_FILE",
    "PredictionSummary",
    "list_inputs",
    "mask_record",
    "output_stems",
    "jpeg_bytes",
    "predict_files",
]

"""Writing a generated real-size dataset: its images in chunks over worker processes, resumable, published at
once (the VOC- and COCO-shaped sets of :mod:`~rca_lightning.data.synthetic_voc_like` and
:mod:`~rca_lightning.data.synthetic_coco_like`).

The files go to a staging folder beside the target, ``.<root name>.partial``, whose ``.settings.json`` names
the settings it is being written with. A chunk of ``CHUNK_SIZE`` images of one split ends with its record
file ``.chunks/<split>-<first index>.json`` (written atomically), so a rerun after an interruption (of the
same settings) skips the finished chunks and writes the others again; a staging folder of other settings is
cleared first. When every chunk is written, the dataset's ``finish`` writes what is made from all the records
(split lists, an instances JSON), then the complete-marker is written and the staging folder is renamed to
the target in one step: a reader never sees a half-written dataset, and the marker's settings say what it
holds. Every image is drawn from a generator seeded by (seed, image), so the files do not depend on the
number of workers, on the chunks or on interruptions.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from rca_lightning.utils.atomic import publish_folder, write_json_atomically
from rca_lightning.utils.errors import InvalidSetting

log = logging.getLogger(__name__)

CHUNK_SIZE = 32
STAGING_SETTINGS = ".settings.json"
CHUNK_RECORDS = ".chunks"


@dataclass(frozen=True)
class Chunk:
    """Images ``start`` .. ``stop - 1`` of one split (``position``: the split's place, 0 train, 1 val)."""

    split: str
    position: int
    start: int
    stop: int


class ChunkedDataset(Protocol):
    """What a generator gives :func:`write_dataset`."""

    marker_name: str

    def settings(self) -> dict:
        """Everything the files depend on (a different value means a different dataset)."""

    def split_sizes(self) -> dict[str, int]:
        """Split name -> number of images, train first."""

    def prepare(self, folder: Path) -> None:
        """Make the folders the chunks write into."""

    def write_chunk(self, folder: Path, chunk: Chunk) -> list[dict]:
        """Draw and write the chunk's images; return one JSON-serialisable record per image."""

    def finish(self, folder: Path, records: dict[str, list[dict]]) -> dict:
        """Write the files made from every image's record (split -> records, in image order); return the
        summary kept in the complete-marker."""


def draw_size(rng: np.random.Generator, sizes: Sequence[tuple[int, int, float]]) -> tuple[int, int]:
    """One (height, width) of ``sizes`` ((height, width, weight) rows, weights summing to 1)."""
    weights = np.array([weight for _, _, weight in sizes])
    height, width, _ = sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))]
    return height, width


def read_json(path: Path) -> object:
    """The JSON value of ``path``, or None where it cannot be read as JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def is_complete(root: str | os.PathLike, dataset: ChunkedDataset) -> bool:
    """Whether ``root`` holds a finished dataset of exactly ``dataset``'s settings."""
    marker = read_json(Path(root) / dataset.marker_name)
    return isinstance(marker, dict) and marker.get("settings") == dataset.settings()


def _chunks(dataset: ChunkedDataset) -> list[Chunk]:
    return [
        Chunk(split, position, start, min(start + CHUNK_SIZE, count))
        for position, (split, count) in enumerate(dataset.split_sizes().items())
        for start in range(0, count, CHUNK_SIZE)
    ]


def _record_file(folder: Path, chunk: Chunk) -> Path:
    return folder / CHUNK_RECORDS / f"{chunk.split}-{chunk.start:09d}.json"


def _write_chunk(dataset: ChunkedDataset, folder: Path, chunk: Chunk) -> int:
    """Write one chunk and, last, its record file; the number of images written."""
    records = dataset.write_chunk(folder, chunk)
    write_json_atomically(_record_file(folder, chunk), {"records": records})
    return len(records)


def _open_staging(root: Path, settings: dict) -> Path:
    """The staging folder of ``root`` for ``settings``, cleared when it was begun with other settings."""
    staging = root.parent / f".{root.name}.partial"
    if staging.exists() and read_json(staging / STAGING_SETTINGS) != settings:
        shutil.rmtree(staging)
    (staging / CHUNK_RECORDS).mkdir(parents=True, exist_ok=True)
    write_json_atomically(staging / STAGING_SETTINGS, settings)
    return staging


def _run_chunks(dataset: ChunkedDataset, staging: Path, chunks: list[Chunk], workers: int) -> None:
    write = partial(_write_chunk, dataset, staging)
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            write(chunk)
        return
    # fork where available: workers start at once without importing the package again.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        for _ in pool.map(write, chunks):
            pass


def write_dataset(root: str | os.PathLike, dataset: ChunkedDataset, workers: int | None = None) -> Path:
    """Write ``dataset`` to ``root`` unless it is complete there (module docstring); resumes a staging folder
    an interrupted call of the same settings left.

    Args:
        root: the dataset folder: missing, empty, or a dataset this generator wrote (with other settings,
            replaced once the new one is complete).
        dataset: the generator.
        workers: processes drawing images (None: every CPU; 0 or 1: this process).

    Returns:
        ``root``.

    Raises:
        InvalidSetting: ``root`` is a file, or a non-empty folder without this generator's marker.
    """
    root = Path(root)
    if is_complete(root, dataset):
        return root
    ours = (root / dataset.marker_name).is_file()
    if root.exists() and not ours and (not root.is_dir() or any(root.iterdir())):
        raise InvalidSetting(
            f"{root}: exists and is not a generated dataset (no {dataset.marker_name}); expected an empty or "
            "missing folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = _open_staging(root, dataset.settings())
    chunks = _chunks(dataset)
    pending = [chunk for chunk in chunks if not _record_file(staging, chunk).is_file()]
    workers = (os.cpu_count() or 1) if workers is None else workers
    pending_images = sum(chunk.stop - chunk.start for chunk in pending)
    log.info("Writing %d images to %s with %d processes", pending_images, staging, max(1, workers))
    began = time.perf_counter()
    dataset.prepare(staging)
    _run_chunks(dataset, staging, pending, workers)
    seconds = time.perf_counter() - began
    log.info("Wrote %d images in %.1f s (%.1f images/s)", pending_images, seconds, pending_images / seconds)
    records: dict[str, list[dict]] = {split: [] for split in dataset.split_sizes()}
    for chunk in chunks:
        records[chunk.split].extend(read_json(_record_file(staging, chunk))["records"])
    summary = dataset.finish(staging, records)
    shutil.rmtree(staging / CHUNK_RECORDS)
    (staging / STAGING_SETTINGS).unlink()
    write_json_atomically(staging / dataset.marker_name, {"settings": dataset.settings(), "summary": summary})
    publish_folder(staging, root, lambda: is_complete(root, dataset))
    return root

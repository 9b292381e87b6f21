"""The on-disk store of the online attention accumulation: one folder, every training image's class maps.

``attention.npy`` is a uint8 ``(N, C, S, S)`` array opened as a memory map (row n is dataset position n,
the image's S x S grid squashed over the whole image), ``written.npy`` a bool ``(N, C)`` array marking the
(image, class) maps written at least once, and ``index.json`` the image ids in dataset order, the class
names, the resolution, the accumulation's settings (``seed_normalisation`` among them: how its maps are read
as seeds, :data:`SEED_NORMALISATIONS`), the epochs done and ``complete`` once training ended.
Rows are keyed by dataset position, so shuffling and several processes give the same file. Untouched rows
stay as holes of a sparse file on disk. Written by ``AttentionAccumulationCallback``; read as seeds by
:mod:`rca_lightning.pseudo.seed_sources`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidData, MissingInput
from rca_lightning.utils.state_files import read_json_object

ATTENTION_FILE = "attention.npy"
WRITTEN_FILE = "written.npy"
INDEX_FILE = "index.json"
FORMAT_VERSION = 1
MAX_ATTENTION = 255.0
# How a stored 0..255 map, resized to the image, becomes a seed in [0, 1]: ``divide_255`` (255 -> 1) or
# ``min_max`` (the release's: each map of an image and class stretched over its pixels,
# ``(a - min) / (max - min + 1e-8)``). Every write is max-normalised to 255, so the two differ where a map's
# minimum is above 0 (a class active over the whole image): min-max pulls it down to 0.
SEED_NORMALISATIONS = ("divide_255", "min_max")
# What an index written before the key existed means: those stores were read as seeds by dividing by 255.
DEFAULT_SEED_NORMALISATION = "divide_255"


def read_index(directory: str | os.PathLike) -> dict:
    """``index.json`` of an accumulation folder, its ``seed_normalisation`` checked (absent in an older index:
    :data:`DEFAULT_SEED_NORMALISATION`); MissingInput / InvalidData naming it."""
    index_path = Path(directory) / INDEX_FILE
    if not index_path.is_file():
        raise MissingInput(f"{index_path} not found: expected an attention-accumulation folder")
    index = read_json_object(index_path, "the index of an attention-accumulation folder")
    if index.get("format_version") != FORMAT_VERSION:
        raise InvalidData(
            f"{index_path}: format_version {index.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    normalisation = index.setdefault("seed_normalisation", DEFAULT_SEED_NORMALISATION)
    if normalisation not in SEED_NORMALISATIONS:
        raise InvalidData(
            f"{index_path}: seed_normalisation {normalisation!r}, expected one of {list(SEED_NORMALISATIONS)}"
        )
    return index


class AttentionStore:
    """An open accumulation folder (module docstring): ``attention`` (N, C, S, S) uint8 and ``written``
    (N, C) bool memory maps, opened for writing. Build it with :meth:`create` or :meth:`open`."""

    def __init__(self, directory: Path, attention: np.memmap, written: np.memmap) -> None:
        self.directory, self.attention, self.written = directory, attention, written

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike,
        image_ids: Sequence[str],
        class_names: Sequence[str],
        resolution: int,
        settings: dict,
    ) -> AttentionStore:
        """An all-zero store for a dataset in ``directory`` (replacing an earlier one), opened.

        Args:
            directory: the folder.
            image_ids: the training images in dataset order (row n is dataset position n).
            class_names: the C foreground classes.
            resolution: side S of each map.
            settings: recorded in the index (the accumulation's settings, ``seed_normalisation``,
                ``epochs_done``).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / INDEX_FILE).unlink(missing_ok=True)  # no reader pairs an old index with new arrays
        shape = (len(image_ids), len(class_names), resolution, resolution)
        for name, dtype, array_shape in (
            (ATTENTION_FILE, np.uint8, shape),
            (WRITTEN_FILE, np.bool_, shape[:2]),
        ):
            np.lib.format.open_memmap(directory / name, mode="w+", dtype=dtype, shape=array_shape).flush()
        index = {
            "format_version": FORMAT_VERSION,
            "image_ids": list(image_ids),
            "class_names": list(class_names),
            "resolution": resolution,
            **settings,
            "complete": False,
        }
        write_json_atomically(directory / INDEX_FILE, index)
        return cls.open(directory, resolution)

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        resolution: int,
        image_ids: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> AttentionStore:
        """An existing store opened for writing, checked to fit the resolution (and dataset, when given)."""
        directory = Path(directory)
        index = read_index(directory)
        index_path = directory / INDEX_FILE
        if index["resolution"] != resolution:
            raise InvalidData(
                f"{index_path}: resolution {index['resolution']}, expected the callback's {resolution}"
            )
        if image_ids is not None and list(image_ids) != index["image_ids"]:
            raise InvalidData(
                f"{index_path}: {len(index['image_ids'])} image ids that differ from the training dataset's "
                f"{len(image_ids)} (another split?); expected the same ids in the same order"
            )
        if class_names is not None and list(class_names) != index["class_names"]:
            raise InvalidData(
                f"{index_path}: class names {index['class_names']}, expected {list(class_names)}"
            )
        attention = np.lib.format.open_memmap(directory / ATTENTION_FILE, mode="r+")
        written = np.lib.format.open_memmap(directory / WRITTEN_FILE, mode="r+")
        expected = (len(index["image_ids"]), len(index["class_names"]), resolution, resolution)
        if attention.shape != expected or written.shape != expected[:2]:
            raise InvalidData(f"{directory / ATTENTION_FILE}: shape {attention.shape}, expected {expected}")
        return cls(directory, attention, written)

    def flush(self) -> None:
        """Write this process's changes to disk."""
        self.attention.flush()
        self.written.flush()

    def update_index(self, **changes) -> None:
        """Rewrite ``index.json`` (atomically) with ``changes``."""
        index = json.loads((self.directory / INDEX_FILE).read_text())
        write_json_atomically(self.directory / INDEX_FILE, {**index, **changes})

    def max_into_rows(self, rows: np.ndarray, maps: np.ndarray, selected: np.ndarray) -> None:
        """Max-combine maps into distinct rows and mark their selected classes written.

        Args:
            rows: (U,) distinct dataset positions.
            maps: (U, C, S, S) uint8.
            selected: (U, C) bool, the classes written now.
        """
        current = self.attention[rows]  # (U, C, S, S) copy
        np.maximum(current, maps, out=current)
        self.attention[rows] = current
        self.written[rows] = self.written[rows] | selected

    def written_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(written (N, C) bool, maps (K, S, S) uint8 of its true entries in row-major order)."""
        self.flush()
        written = np.array(self.written)
        rows, classes = np.nonzero(written)
        return written, np.ascontiguousarray(self.attention[rows, classes])

    def restore(self, written: np.ndarray, maps: np.ndarray) -> None:
        """Write the ``written_maps()`` of a checkpoint into this (all-zero) store."""
        if written.shape != self.written.shape:
            raise InvalidData(
                f"AttentionAccumulationCallback: the checkpoint's maps are for {tuple(written.shape)} "
                f"(images, classes), expected the training dataset's {tuple(self.written.shape)}"
            )
        rows, classes = np.nonzero(written)
        self.attention[rows, classes] = maps
        self.written[:] = written
        self.flush()


@functools.lru_cache(maxsize=4)
def _cached_index(index_path: str, modified_ns: int) -> tuple[dict, dict[str, int]]:
    index = read_index(Path(index_path).parent)
    return index, {image_id: row for row, image_id in enumerate(index["image_ids"])}


def index_and_rows(directory: str | os.PathLike) -> tuple[dict, dict[str, int]]:
    """The index and image id -> row of an accumulation folder, read once per process and index version."""
    index_path = Path(directory) / INDEX_FILE
    if not index_path.is_file():
        raise MissingInput(f"{index_path} not found: expected an attention-accumulation folder")
    return _cached_index(str(index_path.resolve()), index_path.stat().st_mtime_ns)


def load_accumulated_attention(
    directory: str | os.PathLike, require_complete: bool = True
) -> tuple[list[str], list[str], np.ndarray]:
    """Open an accumulation folder read-only.

    Args:
        directory: the folder.
        require_complete: raise unless the training run that wrote it ended.

    Returns:
        (image ids in row order, class names, read-only memory-mapped uint8 (N, C, S, S) array).
    """
    directory = Path(directory)
    index, _ = index_and_rows(directory)
    if require_complete and not index["complete"]:
        raise InvalidData(
            f"{directory / INDEX_FILE}: complete is false (training did not finish writing it); expected true"
        )
    attention = np.load(directory / ATTENTION_FILE, mmap_mode="r")
    return list(index["image_ids"]), list(index["class_names"]), attention


__all__ = [
    "ATTENTION_FILE",
    "DEFAULT_SEED_NORMALISATION",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "MAX_ATTENTION",
    "SEED_NORMALISATIONS",
    "WRITTEN_FILE",
    "AttentionStore",
    "index_and_rows",
    "load_accumulated_attention",
    "read_index",
]

"""What the real-size generated sets share: the base of the VOC-shaped
(:mod:`~rca_lightning.data.synthetic_voc_like`) and the COCO-shaped
(:mod:`~rca_lightning.data.synthetic_coco_like`) generators. They draw the real class names
(:mod:`~rca_lightning.data.synthetic_named_styles`) at the real datasets' image sizes with the built-in
renderer and write them through :mod:`~rca_lightning.data.synthetic_chunked_writer`.

Image ``index`` of a split is drawn from a generator seeded by (seed, the set's stream, the split's place,
``index``): its size first (from the set's table of common sizes), then its content. JPEGs are written at
quality ``JPEG_QUALITY`` with a film grain that makes them about as large as the real photographs; saliency
maps are noiseless (they compress as a detector's do). These sets measure cost and run every reader and stage
on real sizes; they are not meant to be learnt to high accuracy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rca_lightning.data.synthetic_chunked_writer import draw_size, is_complete, write_dataset
from rca_lightning.data.synthetic_named_styles import named_styles
from rca_lightning.data.synthetic_renderer import RenderedImage, SyntheticRenderer
from rca_lightning.data.synthetic_saliency import SALIENCY_FOLDER
from rca_lightning.utils.errors import InvalidSetting

JPEG_QUALITY = 90
# Luminance noise (grey levels): JPEGs of about 100 kB at 500 x 375, 160 kB at 640 x 480, as photographs.
FILM_GRAIN = 18.0


@dataclass(frozen=True)
class GeneratedDataset:
    """Where a generated set is and what the datamodule reads (``data.root``, splits, ``data.saliency_dir``).

    Attributes:
        root: the dataset folder (``data.root``).
        train_split: the train split's name (``data.train_split``).
        val_split: the val split's name (``data.val_split``).
        saliency_dir: the train split's saliency maps (``data.saliency_dir``).
        class_names: the foreground classes, in mask-value order.
    """

    root: Path
    train_split: str
    val_split: str
    saliency_dir: Path
    class_names: tuple[str, ...]


def check_counts(settings: Mapping[str, object]) -> None:
    """InvalidSetting naming the first setting that is not an integer >= 1."""
    for name, value in settings.items():
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise InvalidSetting(f"{name}={value!r}: expected an integer >= 1")


class RealSizeGenerator:
    """Settings, drawing and generation of a real-size set; a subclass names its layout and writes its files.

    A subclass sets ``name``, ``version``, ``marker_name``, ``class_names``, ``train_split``, ``val_split``,
    ``image_sizes`` ((height, width, share) rows) and ``stream`` (the second entry of its images' seeds), and
    implements ``prepare``, ``write_chunk`` and ``finish`` of
    :class:`~rca_lightning.data.synthetic_chunked_writer.ChunkedDataset`.

    Args:
        num_train: images of the train split.
        num_val: images of the val split.
        seed: every byte written is a function of the settings.
        max_objects: each image shows 1..max_objects objects.
    """

    name: str
    version: int
    marker_name: str
    class_names: tuple[str, ...]
    train_split: str
    val_split: str
    image_sizes: tuple[tuple[int, int, float], ...]
    stream: int

    def __init__(self, num_train: int, num_val: int, seed: int = 0, max_objects: int = 4) -> None:
        check_counts({"num_train": num_train, "num_val": num_val, "max_objects": max_objects})
        self.num_train, self.num_val = int(num_train), int(num_val)
        self.seed, self.max_objects = int(seed), int(max_objects)
        self.renderer = SyntheticRenderer(
            self.class_names,
            max_objects=self.max_objects,
            styles=named_styles(self.class_names),
            film_grain=FILM_GRAIN,
        )

    def settings(self) -> dict:
        """The settings recorded in the complete-marker (a different value means a different dataset)."""
        return {
            "generator": self.name,
            "version": self.version,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "seed": self.seed,
            "max_objects": self.max_objects,
        }

    def split_sizes(self) -> dict[str, int]:
        """Split name -> number of images, train first."""
        return {self.train_split: self.num_train, self.val_split: self.num_val}

    def render_image(self, split: str, index: int) -> RenderedImage:
        """Draw image ``index`` of ``split`` again, exactly as it was written (no file I/O)."""
        position = list(self.split_sizes()).index(split)
        rng = np.random.default_rng([self.seed, self.stream, position, index])
        return self.renderer.render(rng, draw_size(rng, self.image_sizes))

    def is_complete(self, root: str | os.PathLike) -> bool:
        """Whether ``root`` holds a finished set of exactly these settings."""
        return is_complete(root, self)

    def generate(self, root: str | os.PathLike, workers: int | None = None) -> GeneratedDataset:
        """Write the set to ``root`` unless it is complete there (resuming an interrupted call).

        Args:
            root: missing, empty, or a set this generator wrote (replaced once the new one is complete).
            workers: processes drawing images (None: every CPU; 0 or 1: this process).

        Raises:
            InvalidSetting: ``root`` is a file or a folder of something else.
        """
        root = write_dataset(root, self, workers)
        return GeneratedDataset(
            root, self.train_split, self.val_split, root / SALIENCY_FOLDER, tuple(self.class_names)
        )

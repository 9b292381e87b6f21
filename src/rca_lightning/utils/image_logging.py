"""Log RGB images (CAM overlays, pseudo masks, figure grids) to whichever Lightning loggers a run has.

``WandbLogger`` gets ``wandb.Image``s (``log_image``), ``TensorBoardLogger`` one ``add_image`` per image and
``CSVLogger``, which has no image support, PNG files under ``<log_dir>/images/<key>/``. Other loggers are
skipped with a warning. Rank zero only: under DDP the other ranks return at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from PIL import Image

IMAGES_FOLDER = "images"


def _check_images(images: Sequence[np.ndarray], captions: Sequence[str] | None) -> None:
    for position, image in enumerate(images):
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            description = (
                f"{image.dtype} array of shape {image.shape}"
                if isinstance(image, np.ndarray)
                else type(image)
            )
            raise ValueError(f"log_images: images[{position}] is a {description}; expected uint8 (H, W, 3)")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"log_images: {len(captions)} captions for {len(images)} images; expected one each")


def _file_stem(position: int, caption: str | None, step: int | None) -> str:
    """``<step>_<position>[_<caption>]`` with the caption reduced to file-name-safe characters."""
    prefix = f"{step:07d}_" if step is not None else ""
    if not caption:
        return f"{prefix}{position:03d}"
    safe_caption = re.sub(r"[^A-Za-z0-9_.-]+", "-", caption).strip("-.")[:80]
    return f"{prefix}{position:03d}_{safe_caption}"


def save_images_as_png(
    folder: Path, images: Sequence[np.ndarray], captions: Sequence[str] | None, step: int | None
) -> list[Path]:
    """Write each image as ``<folder>/<step>_<position>_<caption>.png``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for position, image in enumerate(images):
        caption = captions[position] if captions is not None else None
        path = folder / f"{_file_stem(position, caption, step)}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


@rank_zero_only
def log_images(
    loggers: Logger | Iterable[Logger] | None,
    key: str,
    images: list[np.ndarray],
    captions: list[str] | None = None,
    step: int | None = None,
) -> None:
    """Log a list of RGB images under ``key`` to every logger that can hold them.

    Args:
        loggers: ``trainer.loggers`` (or one logger, or None for none).
        key: name of the image group, e.g. ``"val/cam_overlay"`` (a ``/`` makes a sub-folder for CSVLogger).
        images: N uint8 arrays, each (H, W, 3); sizes may differ.
        captions: N captions, or None.
        step: global step the images belong to (None: the logger's own step / no step prefix).
    """
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(
            f"log_images: key={key!r}; expected a non-empty relative name like 'val/cam_overlay'"
        )
    _check_images(images, captions)
    if loggers is None:
        return
    for logger in [loggers] if isinstance(loggers, Logger) else loggers:
        if isinstance(logger, WandbLogger):
            extra = {"caption": list(captions)} if captions is not None else {}
            logger.log_image(key=key, images=list(images), step=step, **extra)
        elif isinstance(logger, TensorBoardLogger):
            for position, image in enumerate(images):
                caption = captions[position] if captions is not None else None
                tag = f"{key}/{_file_stem(position, caption, None)}"
                logger.experiment.add_image(tag, image, global_step=step, dataformats="HWC")
        elif isinstance(logger, CSVLogger):
            save_images_as_png(Path(logger.log_dir) / IMAGES_FOLDER / key, images, captions, step)
        else:
            rank_zero_warn(f"log_images: {type(logger).__name__} cannot hold images; skipped {key!r}")


__all__ = ["log_images", "save_images_as_png"]

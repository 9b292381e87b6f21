"""Pseudo masks for a whole split: one palette PNG per image, computed in a process pool, resumable.

``<masks_dir>/<image_id>.png`` is a palette (P mode) PNG with the VOC colour map, values 0 (background),
``class index + 1`` and 255 (ignored). Files are written atomically; images whose PNG already exists and
decodes are skipped, so an interrupted run resumes where it stopped, and a pool worker that dies ends the
stage at once, its finished masks kept.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rca_lightning.imaging.image_arrays import read_rgb_file
from rca_lightning.imaging.palette_png import mask_file_is_complete, write_palette_png
from rca_lightning.pseudo.refiners import CRFRefiner, Refiner
from rca_lightning.pseudo.seed_sources import SeedSource, as_seed_source
from rca_lightning.utils.atomic import path_inside
from rca_lightning.utils.errors import StageInterrupted


def mask_path(masks_dir: str | os.PathLike, image_id: str) -> Path:
    """Where the pseudo mask of ``image_id`` lives (``InvalidData`` where that is outside ``masks_dir``)."""
    return path_inside(masks_dir, f"{image_id}.png")


@dataclass(frozen=True)
class PseudoMaskJob:
    """One image's pseudo mask from its seeds and a refiner, written to ``masks_dir`` (picklable for the
    pool).

    Args:
        seed_source: where the seeds (CAMs, accumulated attention or their max) come from, or a folder of
            CAM files (read as ``SeedSource("cams", folder)``).
        masks_dir: output folder.
        refiner: seeds -> mask (:class:`~rca_lightning.pseudo.refiners.Refiner`; the ``refine=`` group).
    """

    seed_source: SeedSource | Path
    masks_dir: Path
    refiner: Refiner = field(default_factory=CRFRefiner)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed_source", as_seed_source(self.seed_source))

    def pseudo_mask(
        self, image_id: str, image_path: str | os.PathLike, tags: np.ndarray | None = None
    ) -> np.ndarray:
        """(H, W) uint8 pseudo mask of one image.

        Args:
            image_id: the image.
            image_path: its RGB file.
            tags: (K,) class indices it is tagged with (needed by ``attention`` seeds).
        """
        image = read_rgb_file(image_path)
        classes, seeds = self.seed_source.seeds(image_id, image.shape[:2], tags)  # (K,), (K, H, W)
        return self.refiner(image, seeds, classes, image_id)

    def __call__(self, item: tuple) -> str:
        """Compute and write the mask of ``(image_id, image_path[, tags])``; returns the image id."""
        write_palette_png(mask_path(self.masks_dir, item[0]), self.pseudo_mask(*item))
        return item[0]


def write_pseudo_masks(
    items: Sequence[tuple],
    job: PseudoMaskJob,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Write the pseudo masks of ``items`` that are not complete yet, over a process pool.

    Args:
        items: ``(image_id, image_path)`` or ``(image_id, image_path, tags)``, tags (K,) the image's tagged
            class indices (needed by ``attention`` seeds).
        job: how a mask is computed and where it goes.
        num_workers: pool processes (None: every CPU; 0 or 1: in this process).
        progress: show a tqdm progress bar.

    Returns:
        ``{"total": ..., "written": ..., "skipped": ...}``.
    """
    job.seed_source.validate([item[0] for item in items])
    pending = [item for item in items if not mask_file_is_complete(mask_path(job.masks_dir, item[0]))]
    Path(job.masks_dir).mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    if getattr(job.refiner, "in_process", False):  # device work (the random walk): one process
        workers = 0
    with tqdm(total=len(pending), desc="pseudo masks", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(pending) <= 1:
            for item in pending:
                job(item)
                bar.update()
        else:
            _write_in_pool(job, pending, min(workers, len(pending)), bar)
    return {"total": len(items), "written": len(pending), "skipped": len(items) - len(pending)}


def _pool_context() -> multiprocessing.context.BaseContext:
    """Workers started fresh (forkserver where there is one, else spawn), never forked from this process:
    GNU OpenMP is not fork-safe, and a worker forked after training or CAM inference ran here hangs in its
    first parallel torch op (reading seeds resizes them). The server imports this module (the pseudo-mask
    code and its refiners) once, when this process's first pool starts it, and each worker forks from it
    with the imports done: a worker importing them itself takes seconds, every pool again."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _one_thread() -> None:
    """A pool worker computes one image at a time: one thread each, the pool spreads over the CPUs."""
    torch.set_num_threads(1)


def _write_in_pool(job: PseudoMaskJob, pending: list[tuple], workers: int, bar: tqdm) -> None:
    """Run ``job`` on ``pending`` in ``workers`` processes, chunks streamed as they finish.

    A worker that dies (killed by a signal, by the kernel's out-of-memory killer) ends the stage at once with
    :class:`StageInterrupted`: ``ProcessPoolExecutor`` notices a lost worker, where ``multiprocessing.Pool``
    would wait for its result for ever. An error raised by the job stops the pool the same way (the chunks
    not started are cancelled) and is raised as it is.
    """
    chunksize = max(1, min(16, len(pending) // (4 * workers)))
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_one_thread)
    try:
        for _ in executor.map(job, pending, chunksize=chunksize):
            bar.update()
    except BrokenProcessPool as error:
        written = sum(mask_file_is_complete(mask_path(job.masks_dir, item[0])) for item in pending)
        raise StageInterrupted(
            f"pseudo masks in {job.masks_dir}: a worker process died (killed by a signal or for lack of "
            f"memory?); {written} of the {len(pending)} masks to write were written and are kept, rerun to "
            "resume"
        ) from error
    finally:
        executor.shutdown(wait=True, cancel_futures=True)

"""``rca-pseudo``: pseudo masks (palette PNGs, 255 = ignore) from seeds: the CAM files of ``rca-cams``,
the attention accumulated during training, or their max.

``rca-pseudo cams_dir=<rca-cams run>/cams`` uses background ``(1 - max CAM) ** 4`` + dense CRF
(``refine=crf``); ``refine.background_threshold=0.3`` uses a constant background score instead;
``refine=saliency refine.saliency_dir=<folder>`` applies the public code's saliency rule; ``refine=none``
skips the CRF. ``seeds=attention attention_dir=<rca-train run>/attention`` uses the accumulated attention of
the tagged classes instead of CAMs (no ``cams_dir`` needed: the ``data`` config's dataset and its
``train_split``), ``seeds=max cams_dir=... attention_dir=...`` the pixel-wise max of both. Rerunning with the
same ``hydra.run.dir`` resumes. Launched by torchrun or srun, the processes share the images.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rca_lightning.pseudo.pseudo_mask_writer import PseudoMaskJob, write_pseudo_masks
from rca_lightning.tasks.stage_settings import claim_output_folder, seed_settings, seeds_and_dataset
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.folder_lock import owned_folder
from rca_lightning.utils.ranks import Ranks, stage_ranks
from rca_lightning.utils.setting_ranges import MAX_WORKERS, number_in_range

log = logging.getLogger(__name__)


def pseudo(cfg: DictConfig) -> tuple[dict, dict]:
    """Write the pseudo masks of the images of the seeds' split; returns the run's figures and objects.
    Under torchrun or srun each process writes its share of the images and the first writes the summary;
    ``masks_dir`` is the launch's from its claim to the end (one owner per folder)."""
    with stage_ranks("rca-pseudo", cfg.barrier_timeout_s) as ranks, ExitStack() as held:
        return _pseudo(cfg, ranks, held)


def _pseudo(cfg: DictConfig, ranks: Ranks, held: ExitStack) -> tuple[dict, dict]:
    # A check that fails on any rank stops every rank with its line, before anyone waits at the barrier.
    with ranks.agree_outcome():
        # num_workers null: this process's share of the machine's CPUs.
        workers = (
            ranks.cpus()
            if cfg.num_workers is None
            else number_in_range("num_workers", cfg.num_workers, 0, MAX_WORKERS, integer=True)
        )
        refiner = instantiate(cfg.refine)
        seed_source, record, split, dataset = seeds_and_dataset(cfg)
        masks_dir = Path(cfg.masks_dir)
        job = PseudoMaskJob(seed_source=seed_source, masks_dir=masks_dir, refiner=refiner)
        settings = {
            "stage": "rca-pseudo",
            **seed_settings(seed_source),
            "split": split,
            "dataset": record,
            "refine": OmegaConf.to_container(cfg.refine, resolve=True),
        }
    # Claimed once every rank's checks passed (a refused setting leaves no folder behind), held to the end (a
    # folder held by another process stops every rank, in one line); past it, every rank writes there.
    with ranks.agree_outcome():
        held.enter_context(owned_folder(masks_dir, "masks_dir"))
        if ranks.is_main:
            masks_dir.mkdir(parents=True, exist_ok=True)
            claim_output_folder(masks_dir, settings)

    items = [
        (image_id, str(dataset.image_path(image_id)), np.flatnonzero(labels))
        for image_id, labels in zip(dataset.image_ids, dataset.labels, strict=True)
    ]
    start = time.perf_counter()
    with ranks.agree_outcome():  # an unreadable file of any rank's share stops every rank, in one line
        share = write_pseudo_masks(ranks.shard(items), job, num_workers=workers, progress=cfg.progress)
    # Past the block, every rank's masks are written.
    seconds = time.perf_counter() - start
    counts = dict(zip(share, ranks.sum(share.values()), strict=True))
    metrics = {
        **counts,
        "processes": ranks.world_size,
        "seconds": seconds,
        "images_per_second": counts["written"] / seconds if counts["written"] else 0.0,
    }
    if ranks.is_main:
        write_json_atomically(
            Path(cfg.paths.output_dir) / "pseudo.json", {**settings, "masks_dir": str(masks_dir), **metrics}
        )
        log.info(
            "Pseudo masks of %d images in %s (%d computed now, %d processes)",
            counts["total"],
            masks_dir,
            counts["written"],
            ranks.world_size,
        )
    return metrics, {"cfg": cfg, "job": job, "dataset": dataset}

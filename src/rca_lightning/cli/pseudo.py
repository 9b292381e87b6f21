"""``rca-pseudo``: pseudo masks (palette PNGs, 255 = ignore) from seeds: the CAM files of ``rca-cams``,
the attention accumulated during training, or their max.

``rca-pseudo cams_dir=<rca-cams run>/cams`` uses background ``(1 - max CAM) ** 4`` + dense CRF
(``refine=crf``); ``refine.background_threshold=0.3`` uses a constant background score instead;
``refine=saliency refine.saliency_dir=<folder>`` applies the public code's saliency rule; ``refine=none``
skips the CRF. ``seeds=attention attention_dir=<rca-train run>/attention`` uses the accumulated attention of
the tagged classes instead of CAMs (no ``cams_dir`` needed: the ``data`` config's dataset and its
``train_split``), ``seeds=max cams_dir=... attention_dir=...`` the pixel-wise max of both. Rerunning with the
same ``hydra.run.dir`` resumes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rca_lightning.cli.console import run_console_script
from rca_lightning.cli.stage_settings import claim_output_folder, seed_settings, seeds_and_dataset
from rca_lightning.pseudo.pseudo_mask_writer import PseudoMaskJob, write_pseudo_masks
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.quiet import silence_known_noise
from rca_lightning.utils.resolvers import register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def pseudo(cfg: DictConfig) -> tuple[dict, dict]:
    """Write the pseudo masks of the images of the seeds' split; returns the run's figures and objects."""
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
    masks_dir.mkdir(parents=True, exist_ok=True)
    claim_output_folder(masks_dir, settings)

    items = [
        (image_id, str(dataset.image_path(image_id)), np.flatnonzero(labels))
        for image_id, labels in zip(dataset.image_ids, dataset.labels, strict=True)
    ]
    start = time.perf_counter()
    counts = write_pseudo_masks(items, job, num_workers=cfg.num_workers, progress=cfg.progress)
    seconds = time.perf_counter() - start
    metrics = {
        **counts,
        "seconds": seconds,
        "images_per_second": counts["written"] / seconds if counts["written"] else 0.0,
    }
    write_json_atomically(
        Path(cfg.paths.output_dir) / "pseudo.json", {**settings, "masks_dir": str(masks_dir), **metrics}
    )
    log.info(
        "Pseudo masks of %d images in %s (%d computed now)", counts["total"], masks_dir, counts["written"]
    )
    return metrics, {"cfg": cfg, "job": job, "dataset": dataset}


@hydra.main(version_base="1.3", config_path="../conf", config_name="pseudo")
def hydra_main(cfg: DictConfig) -> None:
    silence_known_noise()
    pseudo(cfg)


def main() -> None:
    """The console script: user errors end in one line and exit status 2."""
    run_console_script(hydra_main, "rca-pseudo")


if __name__ == "__main__":
    main()

"""``rca-cams``: multi-scale + flip CAMs of a trained classifier for one split, one ``.npz`` per image.

``rca-cams train_dir=logs/train/runs/<time>`` takes the run's model config, selected checkpoint (the last
epoch's unless it was trained with another ``checkpoint=`` choice) and dataset;
``rca-cams ckpt_path=... experiment=...`` builds the model from the composed config. Rerunning with the same
``hydra.run.dir`` resumes: images with a complete file are not computed again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from rca_lightning.inference.trained_runs import load_classifier, resolve_training_run
from rca_lightning.pseudo.cam_inference import CAMDataModule, CAMPredictor
from rca_lightning.pseudo.cam_prediction_writer import CAMWriter
from rca_lightning.pseudo.seed_sources import SeedSource
from rca_lightning.tasks.stage_settings import claim_output_folder, datamodule_for, dataset_record
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.folder_lock import owned_folder

log = logging.getLogger(__name__)


def cams(cfg: DictConfig) -> tuple[dict, dict]:
    """Write the CAM files of ``cfg.split``; returns the run's figures and the built objects.

    Settings, files and seeds are checked before the model is built: a user error stops it at once.
    ``cams_dir`` is this process's while it runs (one owner per folder).
    """
    with owned_folder(cfg.cams_dir, "cams_dir"):
        return _cams(cfg)


def _cams(cfg: DictConfig) -> tuple[dict, dict]:
    run = resolve_training_run(cfg.get("train_dir"), cfg.get("ckpt_path"), cfg.model, cfg.trusted_targets)
    cams_dir = Path(cfg.cams_dir)
    attention_dir = Path(cfg.attention_dir) if cfg.get("attention_dir") else None
    # Checks cam_dtype, cam_stride, seeds and attention_dir.
    writer = CAMWriter(
        cams_dir,
        dtype=cfg.cam_dtype,
        compress=cfg.compress,
        seeds=cfg.seeds,
        attention_dir=attention_dir,
        stride=cfg.cam_stride,
    )
    # The accumulation the seeds read (its index records how its maps become seeds), or None.
    attention = None if cfg.seeds == "cams" else SeedSource("attention", attention_dir=attention_dir)
    if attention is not None:
        attention.check_folders()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    log.info("Seed %d", cfg.seed)
    source = datamodule_for(cfg.data, run.dataset)
    if attention is not None:  # the split's images, all in a complete accumulation
        source.prepare_data()
        image_ids = source.make_dataset(cfg.split, train=False).image_ids
        attention.validate(image_ids, source.class_names)
    model = load_classifier(run.model_cfg, run.checkpoint, list(source.class_names))
    settings = {
        "stage": "rca-cams",
        "checkpoint": str(run.checkpoint.resolve()),
        "checkpoint_selection": run.selection,
        "split": cfg.split,
        "dataset": dataset_record(source),
        "scales": [float(scale) for scale in cfg.scales],
        "flip": bool(cfg.flip),
        "cam_dtype": cfg.cam_dtype,
        "cam_stride": cfg.cam_stride,
        "seeds": cfg.seeds,
        "attention_dir": str(attention_dir.resolve()) if attention_dir else None,
        "seed_normalisation": attention.seed_normalisation if attention else None,
        # The rca-pseudo settings the method's maps are meant for (rca-pipeline applies them).
        "pseudo_mask_settings": dict(model.pseudo_mask_settings),
    }
    predictor = CAMPredictor(model, scales=cfg.scales, flip=cfg.flip)
    datamodule = CAMDataModule(source, cfg.split, cams_dir, num_workers=cfg.get("num_workers"))
    trainer = instantiate(cfg.trainer, callbacks=[writer], logger=False)
    if trainer.is_global_zero:
        cams_dir.mkdir(parents=True, exist_ok=True)
        claim_output_folder(cams_dir, settings)

    start = time.perf_counter()
    trainer.predict(predictor, datamodule=datamodule, return_predictions=False)
    seconds = time.perf_counter() - start
    written = len(datamodule.pending)
    metrics = {
        "num_images": len(datamodule.dataset),
        "written": written,
        "skipped": len(datamodule.dataset) - written,
        "seconds": seconds,
        "images_per_second": written / seconds if written else 0.0,
    }
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        write_json_atomically(output_dir / "cams.json", {**settings, "cams_dir": str(cams_dir), **metrics})
        log.info("CAMs of %d images in %s (%d computed now)", metrics["num_images"], cams_dir, written)
    return metrics, {"cfg": cfg, "model": model, "datamodule": datamodule, "trainer": trainer}

"""``rca-cams``: multi-scale + flip CAMs of a trained classifier for one split, one ``.npz`` per image.

``rca-cams train_dir=logs/train/runs/<time>`` takes the run's model config, selected checkpoint (the last
epoch's unless it was trained with another ``checkpoint=`` choice) and dataset;
``rca-cams ckpt_path=... experiment=...`` builds the model from the composed config. Rerunning with the same
``hydra.run.dir`` resumes: images with a complete file are not computed again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import NamedTuple

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from rca_lightning.cli.console import run_console_script
from rca_lightning.cli.stage_settings import claim_output_folder, datamodule_for, dataset_record
from rca_lightning.pseudo.cam_inference import CAMDataModule, CAMPredictor
from rca_lightning.pseudo.cam_prediction_writer import CAMWriter
from rca_lightning.pseudo.seed_sources import SeedSource, check_seed_kind
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.quiet import silence_known_noise
from rca_lightning.utils.resolvers import register_resolvers
from rca_lightning.utils.safe_loading import load_checkpoint, load_run_config

log = logging.getLogger(__name__)
register_resolvers()


class TrainingRun(NamedTuple):
    """What ``rca-cams`` needs of a trained classifier.

    Attributes:
        checkpoint: the weights to load.
        selection: how they were chosen: the run's ``checkpoint_selection`` (``last``, ``best_map``,
            ``best_cam_miou``) or ``ckpt_path`` when the user named the file.
        model_cfg: the model config the checkpoint was trained with.
        dataset: the dataset the run recorded, or None.
    """

    checkpoint: Path
    selection: str
    model_cfg: DictConfig
    dataset: dict | None


def resolve_training_run(cfg: DictConfig) -> TrainingRun:
    """The checkpoint, its selection, model config and dataset from ``train_dir`` or ``ckpt_path``.

    With ``train_dir`` the checkpoint is the one the run's ``metrics.json`` names (its ``checkpoint=``
    choice: the last epoch's unless the user chose otherwise when training); ``ckpt_path`` overrides it.
    """
    train_dir, ckpt_path = cfg.get("train_dir"), cfg.get("ckpt_path")
    if not train_dir:
        if not ckpt_path:
            raise ValueError("rca-cams needs ckpt_path=<checkpoint> or train_dir=<rca-train run folder>")
        return TrainingRun(Path(ckpt_path), "ckpt_path", cfg.model, None)
    train_dir = Path(train_dir)
    summary_file = train_dir / "metrics.json"
    if not summary_file.is_file():
        raise FileNotFoundError(
            f"{summary_file} not found: train_dir should be a folder written by rca-train"
        )
    summary = json.loads(summary_file.read_text())
    if ckpt_path:
        checkpoint, selection = Path(ckpt_path), "ckpt_path"
    else:
        checkpoint = Path(summary.get("checkpoint") or train_dir / "checkpoints" / "last.ckpt")
        selection = summary.get("checkpoint_selection", "last")
    model_cfg = cfg.model
    run_config = train_dir / ".hydra" / "config.yaml"
    if run_config.is_file():  # the model the checkpoint was trained with, built only from allowed classes
        model_cfg = load_run_config(run_config).model
    else:
        log.warning("%s not found; building the model from the composed config", run_config)
    return TrainingRun(checkpoint, selection, model_cfg, summary.get("dataset"))


def load_classifier(model_cfg: DictConfig, checkpoint: Path, class_names: list[str]) -> torch.nn.Module:
    """Instantiate the classifier and load the checkpoint's weights (memory bank buffers included).

    The checkpoint is read with ``weights_only=True`` (``load_checkpoint``): nothing in it is called.
    """
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (ckpt_path / train_dir)")
    state = load_checkpoint(checkpoint)
    trained_names = state.get("hyper_parameters", {}).get("class_names")
    if trained_names is not None and list(trained_names) != list(class_names):
        raise ValueError(
            f"{checkpoint} was trained on classes {list(trained_names)} but data.class_names is {class_names}"
        )
    model = instantiate(model_cfg)
    model.load_state_dict(state["state_dict"])
    return model


def cams(cfg: DictConfig) -> tuple[dict, dict]:
    """Write the CAM files of ``cfg.split``; returns the run's figures and the built objects."""
    L.seed_everything(cfg.seed, workers=True)
    run = resolve_training_run(cfg)
    source = datamodule_for(cfg.data, run.dataset)
    model = load_classifier(run.model_cfg, run.checkpoint, list(source.class_names))
    cams_dir = Path(cfg.cams_dir)
    attention_dir = Path(cfg.attention_dir) if cfg.get("attention_dir") else None
    if check_seed_kind(cfg.seeds) != "cams":  # the split's images, all in a complete accumulation
        source.prepare_data()
        image_ids = source.make_dataset(cfg.split, train=False).image_ids
        SeedSource("attention", attention_dir=attention_dir).validate(image_ids, source.class_names)
    settings = {
        "stage": "rca-cams",
        "checkpoint": str(run.checkpoint.resolve()),
        "checkpoint_selection": run.selection,
        "split": cfg.split,
        "dataset": dataset_record(source),
        "scales": [float(scale) for scale in cfg.scales],
        "flip": bool(cfg.flip),
        "cam_dtype": cfg.cam_dtype,
        "seeds": cfg.seeds,
        "attention_dir": str(attention_dir.resolve()) if attention_dir else None,
    }
    predictor = CAMPredictor(model, scales=cfg.scales, flip=cfg.flip)
    datamodule = CAMDataModule(source, cfg.split, cams_dir, num_workers=cfg.get("num_workers"))
    writer = CAMWriter(
        cams_dir, dtype=cfg.cam_dtype, compress=cfg.compress, seeds=cfg.seeds, attention_dir=attention_dir
    )
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="cams")
def hydra_main(cfg: DictConfig) -> None:
    silence_known_noise()
    cams(cfg)


def main() -> None:
    """The console script: user errors end in one line and exit status 2."""
    run_console_script(hydra_main)


if __name__ == "__main__":
    main()

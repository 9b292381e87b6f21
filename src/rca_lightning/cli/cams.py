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
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
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
    Every file is checked here, before anything is built: a missing one is a MissingInput naming it.
    """
    train_dir, ckpt_path = cfg.get("train_dir"), cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise MissingInput(
            f"ckpt_path={ckpt_path} not found: expected a checkpoint file written by rca-train"
        )
    if not train_dir:
        if not ckpt_path:
            raise InvalidSetting(
                "train_dir / ckpt_path: expected train_dir=<rca-train run folder> or ckpt_path=<checkpoint>, "
                "got neither"
            )
        return TrainingRun(Path(ckpt_path), "ckpt_path", cfg.model, None)
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        raise MissingInput(f"train_dir={train_dir} not found: expected a folder written by rca-train")
    summary_file = train_dir / "metrics.json"
    if not summary_file.is_file():
        raise MissingInput(
            f"{summary_file} not found: expected train_dir={train_dir} to be a finished rca-train run"
        )
    try:
        summary = json.loads(summary_file.read_text())
    except ValueError as error:
        raise InvalidData(
            f"{summary_file}: not valid JSON ({error}); expected what rca-train writes"
        ) from error
    if ckpt_path:
        checkpoint, selection = Path(ckpt_path), "ckpt_path"
    else:
        checkpoint = Path(summary.get("checkpoint") or train_dir / "checkpoints" / "last.ckpt")
        selection = summary.get("checkpoint_selection", "last")
        if not checkpoint.is_file():
            raise MissingInput(
                f"{checkpoint} not found: expected the checkpoint {summary_file} names "
                f"(checkpoint={selection})"
            )
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
        raise MissingInput(
            f"checkpoint {checkpoint} not found: expected a checkpoint file (ckpt_path / train_dir)"
        )
    state = load_checkpoint(checkpoint)
    trained_names = state.get("hyper_parameters", {}).get("class_names")
    if trained_names is not None and list(trained_names) != list(class_names):
        raise InvalidData(
            f"{checkpoint}: trained on classes {list(trained_names)}, expected data.class_names {class_names}"
        )
    model = instantiate(model_cfg)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:  # missing, unexpected or other-shaped weights, listed over many lines
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        first = details[0][:200] if details else "its weights differ"
        raise InvalidData(
            f"{checkpoint}: does not fit the model config ({first}); expected a checkpoint of that model"
        ) from error
    return model


def cams(cfg: DictConfig) -> tuple[dict, dict]:
    """Write the CAM files of ``cfg.split``; returns the run's figures and the built objects.

    Settings, files and seeds are checked before the model is built: a user error stops it at once.
    """
    run = resolve_training_run(cfg)
    cams_dir = Path(cfg.cams_dir)
    attention_dir = Path(cfg.attention_dir) if cfg.get("attention_dir") else None
    # Checks cam_dtype, seeds and attention_dir.
    writer = CAMWriter(
        cams_dir, dtype=cfg.cam_dtype, compress=cfg.compress, seeds=cfg.seeds, attention_dir=attention_dir
    )
    if cfg.seeds != "cams":
        SeedSource("attention", attention_dir=attention_dir).check_folders()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    log.info("Seed %d", cfg.seed)
    source = datamodule_for(cfg.data, run.dataset)
    if check_seed_kind(cfg.seeds) != "cams":  # the split's images, all in a complete accumulation
        source.prepare_data()
        image_ids = source.make_dataset(cfg.split, train=False).image_ids
        SeedSource("attention", attention_dir=attention_dir).validate(image_ids, source.class_names)
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
        "seeds": cfg.seeds,
        "attention_dir": str(attention_dir.resolve()) if attention_dir else None,
        # The rca-pseudo settings the method's maps are meant for (rca-pipeline applies them).
        "pseudo_mask_overrides": list(model.pseudo_mask_overrides),
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="cams")
def hydra_main(cfg: DictConfig) -> None:
    silence_known_noise()
    cams(cfg)


def main() -> None:
    """The console script: user errors end in one line and exit status 2."""
    run_console_script(hydra_main, "rca-cams")


if __name__ == "__main__":
    main()

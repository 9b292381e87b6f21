"""``rca-seg``: train a segmentation network on pseudo masks and score it on ground truth."""

import json
import logging
from pathlib import Path

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from rca_lightning.imaging.palette_png import write_palette_png
from rca_lightning.report.figure_sample import SAMPLE_FOLDER, write_figure_sample
from rca_lightning.tasks.stage_settings import check_mask_folder, scalar_metrics
from rca_lightning.tasks.trained_stage import build_trained_stage
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.checkpoint_selection import (
    check_checkpoint_file,
    check_selection,
    selected_checkpoint,
    uses_pixel_labels,
)
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.instantiate import opened_loggers

log = logging.getLogger(__name__)


def write_predictions(batches: list[dict], folder: Path) -> int:
    """Write the ``predict_step`` outputs as ``folder/<image_id>.png`` palette PNGs; returns the count."""
    count = 0
    for batch in batches:
        for image_id, prediction in zip(batch["image_id"], batch["prediction"], strict=True):
            write_palette_png(folder / f"{image_id}.png", prediction.numpy())
            count += 1
    return count


def segment(cfg: DictConfig) -> tuple[dict[str, float], dict]:
    """Fit (``cfg.train``) and evaluate (``cfg.evaluate``) the segmentation stage described by ``cfg``.

    The evaluated weights are the final ones of the schedule (``checkpoint=last``), or with
    ``checkpoint=best_val_miou`` the best by val mIoU (pixel labels: recorded in ``metrics.json``).

    Returns:
        The final metrics (validation of the last epoch and, with ``evaluate``, ``test/*`` from the
        evaluation path on the val split) and the built objects.
    """
    with opened_loggers(cfg.get("logger")) as loggers:
        return _segment(cfg, loggers)


def _segment(cfg: DictConfig, loggers: list[Logger]) -> tuple[dict[str, float], dict]:
    selection = check_selection(cfg.get("checkpoint", "last"))
    if selection not in ("last", "best_val_miou"):
        raise InvalidSetting(f"checkpoint={selection}: expected last or best_val_miou for rca-seg")
    if not cfg.train and not cfg.get("ckpt_path"):
        raise InvalidSetting(
            "ckpt_path: train=false evaluates a checkpoint; expected ckpt_path=FILE, got none"
        )
    check_checkpoint_file(cfg.get("ckpt_path"), "rca-seg")
    if cfg.train:
        check_mask_folder(Path(cfg.pseudo_masks_dir), "pseudo_masks_dir", "rca-pseudo")
    stage = build_trained_stage(cfg, cfg.seg_model, loggers, "rca-seg")
    datamodule, model, trainer = stage.datamodule, stage.model, stage.trainer
    metrics: dict[str, float] = {}
    eval_checkpoint = cfg.get("ckpt_path")
    checkpoint_file = eval_checkpoint
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(scalar_metrics(trainer.callback_metrics))
        checkpoint_file, _ = selected_checkpoint(trainer, selection)
        # checkpoint=last evaluates the weights in memory: the final ones, whatever was saved.
        eval_checkpoint = checkpoint_file if selection != "last" else None
    if cfg.evaluate:
        trainer.test(model, datamodule=datamodule, ckpt_path=eval_checkpoint)
        metrics.update(scalar_metrics(trainer.callback_metrics))

    output_dir = Path(cfg.paths.output_dir)
    predictions_dir = None
    if cfg.get("save_predictions"):
        batches = trainer.predict(model, datamodule=datamodule, ckpt_path=eval_checkpoint)
        if trainer.is_global_zero:
            predictions_dir = output_dir / "predictions"
            log.info(
                "Wrote %d predictions to %s", write_predictions(batches, predictions_dir), predictions_dir
            )

    if cfg.figure_sample and trainer.is_global_zero:
        # The report's figure reads these: training images through the network, beside their true masks.
        training_images = datamodule.make_dataset(datamodule.train_split, ground_truth=True)
        write_figure_sample(model, training_images, cfg.figure_sample, output_dir / SAMPLE_FOLDER)

    summary = {
        "output_dir": str(output_dir),
        "checkpoint": checkpoint_file,
        "checkpoint_selection": selection if cfg.train else "ckpt_path",
        "uses_pixel_labels_for_selection": cfg.train and uses_pixel_labels(selection),
        "predictions_dir": str(predictions_dir) if predictions_dir else None,
        "metrics": metrics,
        # The evaluation path's pixel counts on the val split (rows ground truth, background first).
        "test_confusion": model.confusion_counts.get("test") if cfg.evaluate else None,
        "test_images": model.test_image_counts if cfg.evaluate else None,
        "dataset": {
            "root": str(datamodule.root),
            "class_names": list(datamodule.class_names),
            "pseudo_masks_dir": str(cfg.pseudo_masks_dir),
        },
    }
    if trainer.is_global_zero:
        write_json_atomically(output_dir / "metrics.json", summary)
        log.info("Outputs in %s", output_dir)
        log.info("Metrics (also in %s): %s", output_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}

"""``rca-train``: train the RCA CAM classifier from the packaged Hydra configs.

``rca-train -m model.contrast_weight=0.005,0.01,0.02`` runs one job per value (Hydra's basic launcher,
each in its own folder under the sweep folder); ``rca-train hparams_search=rca_optuna`` lets Optuna choose
the values. Either way the value of ``optimized_metric`` each job returns is what the sweeper compares.
"""

import json
import logging
from pathlib import Path

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from rca_lightning.tasks.stage_settings import scalar_metrics
from rca_lightning.tasks.trained_stage import build_trained_stage
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.checkpoint_selection import (
    check_checkpoint_file,
    check_selection,
    selected_checkpoint,
    uses_pixel_labels,
)
from rca_lightning.utils.instantiate import opened_loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict]:
    """Fit the classifier described by ``cfg``; returns the final metrics and the built objects.

    ``metrics.json`` names the checkpoint that makes the CAMs (``checkpoint``, chosen by ``cfg.checkpoint``:
    the last epoch's by default) and how it was chosen (``checkpoint_selection``,
    ``uses_pixel_labels_for_selection``).
    """
    with opened_loggers(cfg.get("logger")) as loggers:
        return _train(cfg, loggers)


def _train(cfg: DictConfig, loggers: list[Logger]) -> tuple[dict[str, float], dict]:
    selection = check_selection(cfg.get("checkpoint", "last"))
    check_checkpoint_file(cfg.get("ckpt_path"), "rca-train")
    stage = build_trained_stage(cfg, cfg.model, loggers, "rca-train")
    datamodule, model, trainer = stage.datamodule, stage.model, stage.trainer
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = scalar_metrics(trainer.callback_metrics)

    output_dir = Path(cfg.paths.output_dir)
    checkpoint, checkpoint_score = selected_checkpoint(trainer, selection)
    summary = {
        "output_dir": str(output_dir),
        "checkpoint": checkpoint,
        "checkpoint_selection": selection,
        "checkpoint_score": checkpoint_score,
        "uses_pixel_labels_for_selection": uses_pixel_labels(selection),
        "metrics": metrics,
        "dataset": {"root": str(datamodule.root), "class_names": list(datamodule.class_names)},
    }
    if trainer.is_global_zero:
        write_json_atomically(output_dir / "metrics.json", summary)
        log.info("Outputs in %s", output_dir)
        log.info("Metrics (also in %s): %s", output_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}

"""The loggers of one ``rca-pipeline`` run: every trained stage logs to the loggers the command line chose
(``logger=wandb``, ``logger=[csv,tensorboard]``, ...), the runs of one pipeline together (wandb: one group, a
run per stage named after it; TensorBoard: ``<run>/tensorboard/<stage>``), and the report's scores,
per-class IoU table and figures are logged once at the end, as the group's ``report`` run."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
from hydra.utils import get_class
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig
from PIL import Image

from rca_lightning.utils.config_values import set_config_values
from rca_lightning.utils.image_logging import log_images
from rca_lightning.utils.instantiate import opened_loggers
from rca_lightning.utils.table_logging import log_table

# The report's scores logged as scalars (percentages; the threshold a fraction), when the stage ran.
REPORT_SCORES = (
    "classifier_val_cam_miou",
    "cam_miou",
    "cam_threshold",
    "ir_label_miou",
    "pseudo_label_miou",
    "pseudo_label_miou_ignored_as_background",
    "seg_miou",
)
REPORT_RUN = "report"


def _logger_class(entry: DictConfig | None) -> type | None:
    target = entry.get("_target_") if isinstance(entry, DictConfig) else None
    return get_class(str(target)) if target else None


def logger_group(logger_cfg: DictConfig | None, run_dir: Path) -> str:
    """The run's wandb group: a ``logger.<name>.group`` of the command line, else the run folder's name and
    a digest of its full path (a resumed run keeps its group; two run folders never share one)."""
    for entry in (logger_cfg or {}).values():
        cls = _logger_class(entry)
        if cls is not None and issubclass(cls, WandbLogger) and entry.get("group"):
            return str(entry.group)
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"{run_dir.name}-{digest}"


def stage_logger_values(logger_cfg: DictConfig | None, run_dir: Path, stage: str) -> dict[str, object]:
    """The values that put ``stage``'s loggers with the rest of the run (set on its config; a
    ``stages.<stage>.overrides`` entry of the same key wins): each wandb logger in the run's group, named
    ``stage``; each TensorBoard logger in ``<run_dir>/tensorboard/<stage>``. CSV files stay in the stage's
    folder."""
    values: dict[str, object] = {}
    group = logger_group(logger_cfg, run_dir)
    for name, entry in (logger_cfg or {}).items():
        cls = _logger_class(entry)
        if cls is not None and issubclass(cls, WandbLogger):
            values |= {
                f"logger.{name}.group": group,
                f"logger.{name}.name": stage,
                f"logger.{name}.job_type": stage,
            }
        elif cls is not None and issubclass(cls, TensorBoardLogger):
            values |= {
                f"logger.{name}.save_dir": str(run_dir),
                f"logger.{name}.name": "tensorboard",
                f"logger.{name}.version": stage,
            }
    return values


def _read_rgb(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def per_class_table(report: dict) -> tuple[list[str], list[list[object]]]:
    """The report's per-class IoU as a table: a column per scored stage, then the counts behind them
    (``images_<stage>``, ``pixels_<stage>``: the ground-truth images and pixels of each class, where the
    stage recorded them), a row per class (None where a stage did not score the class)."""
    columns = {stage: scores for stage, scores in (report.get("per_class_iou") or {}).items()}
    for key, what in (("per_class_images", "images"), ("per_class_pixels", "pixels")):
        columns |= {f"{what}_{stage}": counts for stage, counts in (report.get(key) or {}).items()}
    classes = list(dict.fromkeys(name for scores in columns.values() for name in scores))
    rows = [[name, *(values.get(name) for values in columns.values())] for name in classes]
    return ["class", *columns], rows


def log_report(cfg: DictConfig, run_dir: Path, report: dict, figures: list[str]) -> None:
    """Log the finished run's report to the loggers of ``cfg.logger`` (the pipeline's composed config), as
    the group's ``report`` run: the scores and stage times as scalars, the per-class IoU table (with its
    counts) and every figure of ``figures`` under ``report/<file name>``."""
    if not cfg.get("logger"):
        return
    cfg = copy.deepcopy(cfg)
    set_config_values(cfg, stage_logger_values(cfg.logger, run_dir, REPORT_RUN))
    scalars = {f"report/{key}": report[key] for key in REPORT_SCORES if report.get(key) is not None}
    scalars |= {f"report/seconds/{stage}": seconds for stage, seconds in report["stage_seconds"].items()}
    columns, rows = per_class_table(report)
    with opened_loggers(cfg.logger) as loggers:
        for path in figures:
            log_images(loggers, f"report/{Path(path).stem}", [_read_rgb(path)])
        if rows:
            log_table(loggers, "report/per_class_iou", columns, rows)
        for logger in loggers:
            logger.log_metrics(scalars)
            logger.save()
            logger.finalize("success")

"""The hand-off from the stages to the report: the finished stages' folders gathered into ``report.json``, the
figures drawn from what they wrote, both logged, and the report table printed."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rca_lightning.pipeline.clock import StageClock
from rca_lightning.pipeline.figures import write_pipeline_figures
from rca_lightning.pipeline.loggers import log_report
from rca_lightning.pipeline.settings import RunSettings
from rca_lightning.pipeline.stages import pixel_label_settings
from rca_lightning.report.pipeline_report import build_report, format_report
from rca_lightning.utils.atomic import write_json_atomically

log = logging.getLogger(__name__)


def write_report(settings: RunSettings, finished: dict[str, Path], clock: StageClock) -> dict:
    """Gather, write, log and print the report of the ``finished`` stages (name -> folder, the classifier's
    among them); returns it."""
    start = time.perf_counter()
    scored = {name: folder for name, folder in finished.items() if name != "classifier"}
    report = build_report(finished["classifier"], scored, clock.seconds, pixel_label_settings(settings))
    report["figures"] = write_pipeline_figures(settings.cfg, report, scored, settings.run_dir / "figures")
    report["stage_seconds"]["report"] = time.perf_counter() - start
    write_json_atomically(settings.run_dir / "report.json", report)
    log_report(settings.cfg, settings.run_dir, report, report["figures"])
    print(format_report(report), flush=True)
    log.info("Report: %s", settings.run_dir / "report.json")
    return report


__all__ = ["write_report"]

"""Running a pipeline: the plan made and checked, then each planned stage run from its checked config in its
folder, skipped when it finished earlier, resumed when it stopped; then the report.

Launched by torchrun or srun, every process runs every stage (the trainers as DDP ranks, the CPU stages on
their share of the images), they meet after each stage, and the first process writes the run's own files and
the report. The run folder is the launch's while it runs (one owner per folder), and a resume with other
settings than the run's first is refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from rca_lightning.pipeline.clock import StageClock
from rca_lightning.pipeline.plan import Plan, PlannedStage
from rca_lightning.pipeline.report import write_report
from rca_lightning.pipeline.settings import RunSettings
from rca_lightning.pipeline.stages import STAGES
from rca_lightning.utils.config_tree import print_config_tree
from rca_lightning.utils.config_values import literal
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.folder_lock import owned_folder
from rca_lightning.utils.ranks import Ranks, stage_ranks
from rca_lightning.utils.run_fingerprint import claim_run_settings
from rca_lightning.utils.settings_check import check_overrides

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


class Pipeline:
    """Runs the enabled stages of one ``rca-pipeline`` call into ``run_dir`` (the arguments: see
    :class:`~rca_lightning.pipeline.settings.RunSettings`)."""

    def __init__(self, cfg: DictConfig, command_line: list[str], choices: dict, run_dir: Path) -> None:
        stand_in_keys = {stage.name: stage.provided_by for stage in STAGES if stage.provided_by}
        self.settings = RunSettings(cfg, command_line, choices, run_dir, stand_in_keys)
        self.run_dir = run_dir

    def plan(self) -> Plan:
        """The checked plan (:class:`~rca_lightning.pipeline.plan.Plan`) of :data:`STAGES` for this run."""
        return Plan(self.settings, STAGES)

    def run(self) -> dict | None:
        """Run every enabled unfinished stage, then write and print the report of what ran; returns the
        report (None on the processes but the first of a torchrun / srun launch, and with
        ``print_config=true``, which prints every enabled stage's composed config as a tree and runs
        nothing)."""
        if self.settings.cfg.get("print_config"):
            print_config_tree(self.plan().configs(), title=f"rca-pipeline stages ({self.run_dir})")
            return None
        with stage_ranks("rca-pipeline", self.settings.cfg.barrier_timeout_s) as ranks, ExitStack() as held:
            if not ranks.agree(str(self.run_dir.resolve())):
                raise InvalidSetting(
                    f"hydra.run.dir: the {ranks.world_size} processes of this launch got different run "
                    "folders; expected hydra.run.dir=<one folder> on the command line"
                )
            # A check that fails on any rank stops every rank with its line, before anyone waits.
            with ranks.agree_outcome():
                plan = self.plan()  # first: refused settings leave no folder behind
                held.enter_context(owned_folder(self.run_dir, "hydra.run.dir"))
                claim_run_settings(self.run_dir, self.settings.cfg)
            clock = StageClock(self.run_dir, writes=ranks.is_main)
            if ranks.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            to_run = {planned.stage.name: planned for planned in plan.to_run}
            for stage in plan.enabled:
                if stage.name in to_run:
                    self.run_stage(to_run[stage.name], clock, ranks)
                else:
                    clock.settle(stage.name, self.settings.folder(stage.name))  # an attempt killed at its end
                    log.info("Stage %s: finished earlier, skipped", stage.name)
                # The stage's files are there before any process reads them.
                replace(ranks, stage=f"rca-pipeline (stage {stage.name})").barrier()
            if not ranks.is_main:
                return None
            finished = {
                stage.name: plan.settings.folder(stage.name) for stage in STAGES if plan.is_done(stage)
            }
            return write_report(self.settings, finished, clock)

    def run_stage(self, planned: PlannedStage, clock: StageClock, ranks: Ranks) -> None:
        """Run ``planned`` from its checked config with its recorded values set (its ``seconds`` add up every
        attempt), the config saved in its folder first (:meth:`PlannedStage.save`)."""
        log.info("Stage %s: running (outputs in %s)", planned.stage.name, planned.folder)
        cfg = planned.config_to_run(self.settings)
        if ranks.is_main:
            planned.save(cfg)
        ranks.barrier()  # the saved config is there for every process's stage
        clock.time(planned.stage.name, planned.folder, lambda: planned.stage.run(cfg))


def pipeline_job(cfg: DictConfig) -> dict | None:
    """``rca-pipeline``'s job: the pipeline of this Hydra job's config, command line and run folder."""
    job = HydraConfig.get()
    choices, run_dir = dict(job.runtime.choices), Path(job.runtime.output_dir)
    return Pipeline(cfg, list(job.overrides.task), choices, run_dir).run()


def run_pipeline(overrides: Sequence[str] = (), run_dir: str | os.PathLike = "pipeline_run") -> dict | None:
    """The Python form of ``rca-pipeline <overrides> hydra.run.dir=<run_dir>`` (for notebooks and scripts).

    Args:
        overrides: command-line style overrides of ``pipeline.yaml``.
        run_dir: the run folder; running again with the same folder skips finished stages.

    Returns:
        The report (what ``report.json`` holds).
    """
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pipeline", overrides=list(overrides), return_hydra_config=True)
        check_overrides("pipeline", list(overrides), composed=cfg)  # what SettingsCheck does in a job
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            cfg.paths.output_dir = literal(str(run_dir))
            del cfg["hydra"]
        return Pipeline(cfg, list(overrides), choices, Path(run_dir)).run()


__all__ = ["Pipeline", "pipeline_job", "run_pipeline"]

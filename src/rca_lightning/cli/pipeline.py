"""``rca-pipeline``: from images with tags to a trained segmentation network and a report, stage by stage.

classifier (``rca-train``) -> cams (``rca-cams``) -> cam_eval (``rca-eval``) -> [with ``refine=random_walk``:
ir_labels (``rca-pseudo refine=ir_labels``) -> ir_label_eval (``rca-eval``) -> boundary (``rca-boundary``)] ->
pseudo_masks (``rca-pseudo``) -> pseudo_mask_eval (``rca-eval``) -> segmentation (``rca-seg``) -> report.
:data:`STAGES` is the table: each stage's config, done-file, runner, the stages it reads and what the
pipeline gives it (:class:`~rca_lightning.cli.stage_overrides.StageOverrides`): config-group choices and the
command line's overrides to compose with, then paths and earlier stages' recorded values set on the composed
config as typed values (:mod:`rca_lightning.pipeline_handoffs`), never as override strings;
``stages.<name>.enabled=false`` leaves a stage out (and the report with it). Each stage runs in this process
from its own composed config, writes into ``<run>/<stage>/`` exactly what its console script would write
there, and is skipped when its done-file exists; an unfinished stage resumes (the classifier and the
segmentation network from their last checkpoint, CAMs and pseudo masks image by image).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rca_lightning.cli.boundary import boundary
from rca_lightning.cli.cams import cams
from rca_lightning.cli.config_tree import print_config_tree
from rca_lightning.cli.console import one_line, run_console_script
from rca_lightning.cli.evaluate import evaluate
from rca_lightning.cli.pipeline_figures import write_pipeline_figures
from rca_lightning.cli.pipeline_loggers import log_report
from rca_lightning.cli.pipeline_stages import Stage, check_stage_entries
from rca_lightning.cli.pseudo import pseudo
from rca_lightning.cli.seg import segment
from rca_lightning.cli.stage_clock import StageClock
from rca_lightning.cli.stage_overrides import (
    ATTENTION_CALLBACK,
    IRN_STAGES,
    IRN_THRESHOLD_CHOICES,
    PIPELINE_SEEDS,
    StageOverrides,
    override_key,
)
from rca_lightning.cli.stage_settings import swept_value
from rca_lightning.cli.train import train
from rca_lightning.pipeline_handoffs import literal, set_config_values
from rca_lightning.report.pipeline_report import build_report, format_report
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from rca_lightning.utils.folder_lock import owned_folder
from rca_lightning.utils.quiet import silence_known_noise
from rca_lightning.utils.ranks import Ranks, stage_ranks
from rca_lightning.utils.resolvers import register_resolvers
from rca_lightning.utils.run_fingerprint import claim_run_settings
from rca_lightning.utils.settings_check import check_overrides

log = logging.getLogger(__name__)
register_resolvers()


class Pipeline(StageOverrides):
    """Runs the enabled stages of one ``rca-pipeline`` call into ``run_dir`` (the arguments: see
    :class:`StageOverrides`)."""

    def __init__(self, cfg: DictConfig, command_line: list[str], choices: dict, run_dir: Path) -> None:
        super().__init__(cfg, command_line, choices, run_dir)
        self.clock = StageClock(run_dir)
        self.ranks = Ranks()  # the processes of a torchrun / srun launch, while run() runs

    def user_overrides(self, stage: Stage) -> list[str]:
        return [*self.cfg.stages[stage.name].overrides]

    def enabled(self, stage: Stage) -> bool:
        """``stages.<name>.enabled``; IRN's stages only with ``refine=random_walk``."""
        irn_stage = stage.name in IRN_STAGES
        return bool(self.cfg.stages[stage.name].enabled) and (self.refine == "random_walk" or not irn_stage)

    def needs(self, stage: Stage) -> tuple[str, ...]:
        """The stages whose outputs ``stage`` reads (the random walk's masks read the boundary maps too; with
        ``irn_thresholds=best_cam_threshold`` IRN's thresholds read cam_eval's)."""
        walk = stage.name == "pseudo_masks" and self.refine == "random_walk"
        needs = (*stage.needs, "boundary") if walk else stage.needs
        moved = self.cfg.irn_thresholds == "best_cam_threshold" and (walk or stage.name == "ir_labels")
        return (*needs, "cam_eval") if moved else needs

    def to_run(self) -> list[Stage]:
        """The enabled stages that have not finished, in order."""
        return [stage for stage in STAGES if self.enabled(stage) and not self.is_done(stage)]

    def check_settings(self) -> None:
        """Before any stage runs: ``seeds``, ``train_dir`` and ``stages`` make sense (every stage that will
        run finds what it reads), and every stage to run composes, so that a typo in the last stage's
        overrides stops the run now, not after hours of training."""
        if self.cfg.seeds not in PIPELINE_SEEDS:
            raise InvalidSetting(f"seeds={self.cfg.seeds!r}: expected one of {list(PIPELINE_SEEDS)}")
        if self.cfg.irn_thresholds not in IRN_THRESHOLD_CHOICES:
            raise InvalidSetting(
                f"irn_thresholds={self.cfg.irn_thresholds!r}: expected one of {list(IRN_THRESHOLD_CHOICES)}"
            )
        if self.cfg.get("train_dir"):
            summary = self.classifier_dir / "metrics.json"
            if not summary.is_file():
                raise MissingInput(
                    f"train_dir={self.classifier_dir}: {summary} not found; expected a finished rca-train run"
                )
        check_stage_entries(self.cfg.get("stages"), STAGE_NAMES)
        by_name = {stage.name: stage for stage in STAGES}
        for stage in self.to_run():
            for needed in map(by_name.get, self.needs(stage)):
                if not self.enabled(needed) and not self.is_done(needed):
                    raise InvalidSetting(
                        f"stages.{needed.name}.enabled=false: stage {stage.name} reads its output; expected "
                        f"stages.{stage.name}.enabled=false too (or a finished {needed.name} in this run)"
                    )
        for stage in self.to_run():
            cfg = self.stage_config(stage)
            own = self.user_overrides(stage)  # their values against the types of the stage's settings
            overrides = [*stage.arguments(self).overrides, *own]
            check_overrides(stage.config_name, overrides, own, source=f"stages.{stage.name}")
            if stage.name == "classifier" and self.cfg.seeds in ("attention", "max"):
                targets = [str(c.get("_target_", "")) for c in (cfg.get("callbacks") or {}).values() if c]
                if not any(target.endswith(ATTENTION_CALLBACK) for target in targets):
                    raise InvalidSetting(
                        f"seeds={self.cfg.seeds}: the classifier would leave no attention accumulation; "
                        "expected callbacks=[default,attention_accumulation] (or seeds=auto / cams)"
                    )

    def composition(self, stage: Stage) -> tuple[list[str], dict[str, object]]:
        """The overrides ``stage``'s config is composed with (the pipeline's, then the user's
        ``stages.<name>.overrides``) and the values then set on it: the pipeline's, less those of a key the
        overrides set themselves (or set a key under), so the user's win."""
        arguments = stage.arguments(self)
        overrides = [*arguments.overrides, *self.user_overrides(stage)]
        keys = [override_key(override) for override in overrides]
        values = {
            key: value
            for key, value in arguments.values.items()
            if not any(given == key or given.startswith(f"{key}.") for given in keys)
        }
        return overrides, values

    def stage_config(self, stage: Stage) -> DictConfig:
        """``stage``'s composed config (its outputs in its folder of the run), with the pipeline's values set
        literally; InvalidSetting naming ``stages.<name>`` when it does not compose."""
        overrides, values = self.composition(stage)
        try:
            cfg = compose(stage.config_name, overrides=overrides)
        except (HydraException, OmegaConfBaseException) as error:
            raise InvalidSetting(f"stages.{stage.name}: {one_line(error)}") from error
        with open_dict(cfg):
            cfg.paths.output_dir = literal(str(self.folder(stage.name)))
        set_config_values(cfg, values)
        return cfg

    def compose_stage(self, stage: Stage) -> DictConfig:
        """:meth:`stage_config`, also saved where the console script would leave it (``.hydra/``), so the
        folder stands alone (rca-cams reads it): ``config.yaml`` holds every value, ``overrides.yaml`` the
        overrides it was composed with."""
        cfg = self.stage_config(stage)
        if self.ranks.is_main:
            hydra_dir = self.folder(stage.name) / ".hydra"
            hydra_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, hydra_dir / "config.yaml")
            overrides, _ = self.composition(stage)
            OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
        self.ranks.barrier()  # the saved config is there for every process's stage
        return cfg

    def is_done(self, stage: Stage) -> bool:
        if stage.name == "classifier" and self.cfg.get("train_dir"):
            return True
        return (self.folder(stage.name) / stage.done_file).is_file()

    def run_stage(self, stage: Stage) -> None:
        """Run ``stage`` unless it is done; its ``seconds`` (:class:`StageClock`) add up every attempt."""
        self.clock.settle(stage.name, self.folder(stage.name))
        if self.is_done(stage):
            log.info("Stage %s: finished earlier, skipped", stage.name)
            return
        log.info("Stage %s: running (outputs in %s)", stage.name, self.folder(stage.name))
        cfg = self.compose_stage(stage)
        self.clock.time(stage.name, self.folder(stage.name), lambda: stage.run(cfg))

    def print_configs(self) -> None:
        """Print every enabled stage's composed config as a tree (``print_config=true``)."""
        configs = {}
        for stage in STAGES:
            if self.enabled(stage) and not (stage.name == "classifier" and self.cfg.get("train_dir")):
                configs[stage.name] = self.stage_config(stage)
        print_config_tree(configs, title=f"rca-pipeline stages ({self.run_dir})")

    def run(self) -> dict | None:
        """Run every enabled unfinished stage, then write and print the report of what ran; returns the
        report (None with ``print_config=true``, which only prints the stages' configs).

        Launched by torchrun or srun, every process runs every stage (the trainers as DDP ranks, the CPU
        stages on their share of the images), they meet after each stage, and the first process writes
        the run's own files and the report (the others return None). The run folder is the launch's while
        it runs (one owner per folder), and a resume with other settings than the run's first is refused."""
        if self.cfg.get("print_config"):
            self.check_settings()
            self.print_configs()
            return None
        with stage_ranks("rca-pipeline", self.cfg.barrier_timeout_s) as ranks, ExitStack() as held:
            if not ranks.agree(str(self.run_dir.resolve())):
                raise InvalidSetting(
                    f"hydra.run.dir: the {ranks.world_size} processes of this launch got different run "
                    "folders; expected hydra.run.dir=<one folder> on the command line"
                )
            # A check that fails on any rank stops every rank with its line, before anyone waits.
            with ranks.agree_outcome():
                self.check_settings()  # first: refused settings leave no folder behind
                held.enter_context(owned_folder(self.run_dir, "hydra.run.dir"))
                claim_run_settings(self.run_dir, self.cfg)
            self.ranks, self.clock = ranks, StageClock(self.run_dir, writes=ranks.is_main)
            if ranks.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            for stage in STAGES:
                if self.enabled(stage):
                    self.run_stage(stage)
                    # The stage's files are there before any process reads them.
                    replace(ranks, stage=f"rca-pipeline (stage {stage.name})").barrier()
            return self.write_report() if ranks.is_main else None

    def write_report(self) -> dict:
        """Gather, write and print the report of the stages that finished."""
        start = time.perf_counter()
        finished = {stage.name: self.folder(stage.name) for stage in STAGES[1:] if self.is_done(stage)}
        report = build_report(self.classifier_dir, finished, self.clock.seconds, self.pixel_label_settings())
        report["figures"] = write_pipeline_figures(self.cfg, report, finished, self.run_dir / "figures")
        report["stage_seconds"]["report"] = time.perf_counter() - start
        write_json_atomically(self.run_dir / "report.json", report)
        log_report(self.cfg, self.run_dir, report, report["figures"])
        print(format_report(report), flush=True)
        log.info("Report: %s", self.run_dir / "report.json")
        return report


STAGES = (
    Stage("classifier", "train", "metrics.json", train, (), Pipeline.for_classifier),
    Stage("cams", "cams", "cams.json", cams, ("classifier",), Pipeline.for_cams),
    Stage("cam_eval", "eval", "eval.json", evaluate, ("cams",), Pipeline.for_cam_eval),
    Stage("ir_labels", "pseudo", "pseudo.json", pseudo, ("cams",), Pipeline.for_ir_labels),
    Stage("ir_label_eval", "eval", "eval.json", evaluate, ("ir_labels",), Pipeline.for_ir_label_eval),
    Stage(
        "boundary", "boundary", "boundary.json", boundary, ("classifier", "ir_labels"), Pipeline.for_boundary
    ),
    Stage("pseudo_masks", "pseudo", "pseudo.json", pseudo, ("cams",), Pipeline.for_pseudo_masks),
    Stage(
        "pseudo_mask_eval", "eval", "eval.json", evaluate, ("pseudo_masks",), Pipeline.for_pseudo_mask_eval
    ),
    Stage("segmentation", "seg_train", "metrics.json", segment, ("pseudo_masks",), Pipeline.for_segmentation),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def run_pipeline(overrides: Sequence[str] = (), run_dir: str | os.PathLike = "pipeline_run") -> dict | None:
    """The Python form of ``rca-pipeline <overrides> hydra.run.dir=<run_dir>`` (for notebooks and scripts).

    Args:
        overrides: command-line style overrides of ``pipeline.yaml``.
        run_dir: the run folder; running again with the same folder skips finished stages.

    Returns:
        The report (what ``report.json`` holds; None with ``print_config=true``).
    """
    config_dir = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("pipeline", overrides=list(overrides), return_hydra_config=True)
        check_overrides("pipeline", list(overrides), composed=cfg)  # what SettingsCheck does in a job
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            cfg.paths.output_dir = literal(str(run_dir))
            del cfg["hydra"]
        return Pipeline(cfg, list(overrides), choices, Path(run_dir)).run()


@hydra.main(version_base="1.3", config_path="../conf", config_name="pipeline")
def hydra_main(cfg: DictConfig) -> float | None:
    silence_known_noise()
    hydra_cfg = HydraConfig.get()
    pipeline = Pipeline(
        cfg,
        command_line=list(hydra_cfg.overrides.task),
        choices=dict(hydra_cfg.runtime.choices),
        run_dir=Path(hydra_cfg.runtime.output_dir),
    )
    report = pipeline.run()
    return swept_value(cfg, report, multirun=hydra_cfg.mode == RunMode.MULTIRUN) if report else None


def main() -> None:
    """The console script: user errors end in one line and exit status 2."""
    run_console_script(hydra_main, "rca-pipeline")


if __name__ == "__main__":
    main()

"""``rca-pipeline``: from images with tags to a trained segmentation network and a report, stage by stage.

classifier (``rca-train``) -> cams (``rca-cams``) -> cam_eval (``rca-eval``) -> pseudo_masks (``rca-pseudo``)
-> pseudo_mask_eval (``rca-eval``) -> segmentation (``rca-seg``) -> report. Each stage runs in this process
from its own composed config, writes into ``<run>/<stage>/`` exactly what its console script would write
there, and is skipped when its summary file exists; an unfinished stage resumes (the classifier and the
segmentation network from their last checkpoint, CAMs and pseudo masks image by image).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rca_lightning.cli.cams import cams
from rca_lightning.cli.console import one_line, run_console_script
from rca_lightning.cli.evaluate import evaluate
from rca_lightning.cli.pseudo import pseudo
from rca_lightning.cli.seg import segment
from rca_lightning.cli.stage_settings import datamodule_for, read_settings
from rca_lightning.cli.train import train
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.pseudo.seed_sources import SEED_KINDS
from rca_lightning.report.figure_selection import pick_figure_images
from rca_lightning.report.pipeline_report import build_report, format_report
from rca_lightning.report.report_figures import grid_rows, pipeline_figure, write_grid
from rca_lightning.report.score_figures import write_score_figures
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from rca_lightning.utils.image_logging import log_images
from rca_lightning.utils.instantiate import instantiate_loggers
from rca_lightning.utils.quiet import silence_known_noise
from rca_lightning.utils.resolvers import register_resolvers
from rca_lightning.utils.settings_check import check_overrides

log = logging.getLogger(__name__)
register_resolvers()

STATE_FILE = "pipeline_state.json"
# Keys of this config that are the pipeline's own, not rca-train's.
PIPELINE_KEYS = ("train_dir", "stages", "seg_experiment", "report", "seeds")
# Where rca-train's online attention accumulation leaves its maps (callbacks/attention_accumulation.yaml).
ATTENTION_FOLDER = "attention"
ATTENTION_CALLBACK = "AttentionAccumulationCallback"
# The pipeline's `seeds` choices: auto, or a kind every seed-reading stage takes.
PIPELINE_SEEDS = ("auto", *SEED_KINDS)


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: the config it is composed from, the file that marks it finished."""

    name: str
    config_name: str
    done_file: str
    run: Callable[[DictConfig], tuple[dict, object]]


STAGES = (
    Stage("classifier", "train", "metrics.json", train),
    Stage("cams", "cams", "cams.json", cams),
    Stage("cam_eval", "eval", "eval.json", evaluate),
    Stage("pseudo_masks", "pseudo", "pseudo.json", pseudo),
    Stage("pseudo_mask_eval", "eval", "eval.json", evaluate),
    Stage("segmentation", "seg_train", "metrics.json", segment),
)


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_pipeline_override(override: str) -> bool:
    return _override_key(override).split(".", 1)[0] in PIPELINE_KEYS


class Pipeline:
    """Runs the stages of one ``rca-pipeline`` call into ``run_dir``.

    Args:
        cfg: the composed ``pipeline.yaml``.
        command_line: this run's overrides (``hydra.overrides.task``).
        choices: this run's config-group choices (``hydra.runtime.choices``).
        run_dir: the run folder (``hydra.run.dir``).
    """

    def __init__(self, cfg: DictConfig, command_line: list[str], choices: dict, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.classifier_overrides = [o for o in command_line if not _is_pipeline_override(o)]
        # What the stages share with the classifier: the dataset and paths (every stage), the hardware and
        # the seed (the stages that have a trainer).
        self.data_overrides = [f"data={choices['data']}"] + [
            o for o in command_line if _override_key(o).split(".", 1)[0] in ("data", "paths")
        ]
        self.trainer_overrides = [f"trainer={choices['trainer']}", f"seed={cfg.seed}"]
        self.seg_experiment = cfg.get("seg_experiment") or choices.get("seg")
        self.experiment = choices.get("experiment")
        self.state_path = run_dir / STATE_FILE
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {"stages": {}}

    def folder(self, stage: str) -> Path:
        return self.run_dir / stage

    @property
    def classifier_dir(self) -> Path:
        return Path(self.cfg.train_dir) if self.cfg.get("train_dir") else self.folder("classifier")

    def stage_overrides(self, stage: Stage, seed_overrides: list[str] | None = None) -> list[str]:
        """The overrides ``stage``'s config is composed with (its own command line, as it were); the cams
        stage's seed overrides are ``seed_overrides`` when given, else :meth:`seed_overrides`."""
        folder = self.folder(stage.name)
        last = folder / "checkpoints" / "last.ckpt"
        if stage.name == "classifier":
            resume = [f"ckpt_path={last}"] if last.is_file() and not self.cfg.get("ckpt_path") else []
            return [*self.classifier_overrides, *resume]
        if stage.name == "cams":
            experiment = [f"experiment={self.experiment}"] if self.experiment else []
            return [
                *self.data_overrides,
                *self.trainer_overrides,
                *experiment,
                f"train_dir={self.classifier_dir}",
                f"cams_dir={self.cams_dir}",
                *(self.seed_overrides() if seed_overrides is None else seed_overrides),
            ]
        if stage.name == "cam_eval":
            return [*self.data_overrides, f"cams_dir={self.cams_dir}"]
        if stage.name == "pseudo_masks":
            return [
                *self.data_overrides,
                *self.method_pseudo_mask_overrides(),
                f"cams_dir={self.cams_dir}",
                f"masks_dir={self.masks_dir}",
            ]
        if stage.name == "pseudo_mask_eval":
            return [*self.data_overrides, f"masks_dir={self.masks_dir}"]
        experiment = [f"seg_experiment={self.seg_experiment}"] if self.seg_experiment else []
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        return [
            *self.data_overrides,
            *self.trainer_overrides,
            *experiment,
            f"pseudo_masks_dir={self.masks_dir}",
            *resume,
        ]

    def seed_overrides(self) -> list[str]:
        """The ``seeds`` / ``attention_dir`` of the cams stage: ``seeds=auto`` takes the classifier's
        accumulated attention when it left one (the release's seeds), else its multi-scale CAMs."""
        attention_dir = self.classifier_dir / ATTENTION_FOLDER
        has_attention = (attention_dir / "index.json").is_file()
        kind = self.cfg.seeds
        if kind == "auto":
            kind = "attention" if has_attention else "cams"
        if kind == "cams":
            return ["seeds=cams"]
        if not has_attention:
            raise InvalidSetting(
                f"seeds={kind}: the classifier left no attention accumulation in {attention_dir} "
                "(train it with callbacks=[default,attention_accumulation])"
            )
        # Attention seeds replace the CAMs: one scale is enough for the network's pass.
        one_scale = ["scales=[1.0]", "flip=false"] if kind == "attention" else []
        return [f"seeds={kind}", f"attention_dir={attention_dir}", *one_scale]

    def method_pseudo_mask_overrides(self) -> list[str]:
        """The ``rca-pseudo`` settings the classifier's method recorded in ``cams.json`` (EPS: a constant
        background score, no CRF); none before the cams stage ran. The user's ``stages.pseudo_masks``
        overrides come after them, so they win."""
        record = self.folder("cams") / "cams.json"
        if not record.is_file():
            return []
        return list(json.loads(record.read_text()).get("pseudo_mask_overrides", []))

    @property
    def cams_dir(self) -> Path:
        return self.folder("cams") / "maps"

    @property
    def masks_dir(self) -> Path:
        return self.folder("pseudo_masks") / "masks"

    def check_settings(self) -> None:
        """Before any stage runs: ``seeds``, ``train_dir`` and ``stages`` make sense, and every unfinished
        stage's config composes, so that a typo in the last stage's overrides stops the run now, not after
        hours of training."""
        if self.cfg.seeds not in PIPELINE_SEEDS:
            raise InvalidSetting(f"seeds={self.cfg.seeds!r}: expected one of {list(PIPELINE_SEEDS)}")
        if self.cfg.get("train_dir"):
            summary = self.classifier_dir / "metrics.json"
            if not summary.is_file():
                raise MissingInput(
                    f"train_dir={self.classifier_dir}: {summary} not found; expected a finished rca-train run"
                )
        stages = check_stage_entries(self.cfg.get("stages") or {})
        classifier_done = self.is_done(STAGES[0])
        for stage in STAGES:
            if self.is_done(stage):
                continue
            # Before the classifier ran, its config says whether it will leave attention (checked below).
            seeds = None if classifier_done else []
            try:
                cfg = compose(
                    stage.config_name,
                    overrides=self.stage_overrides(stage, seeds) + [*stages.get(stage.name, [])],
                )
            except (HydraException, OmegaConfBaseException) as error:
                raise InvalidSetting(f"stages.{stage.name}: {one_line(error)}") from error
            own = [*stages.get(stage.name, [])]  # their values against the types of the stage's settings
            overrides = self.stage_overrides(stage, seeds) + own
            check_overrides(stage.config_name, overrides, own, source=f"stages.{stage.name}")
            if stage.name == "classifier" and self.cfg.seeds in ("attention", "max"):
                targets = [str(c.get("_target_", "")) for c in (cfg.get("callbacks") or {}).values() if c]
                if not any(target.endswith(ATTENTION_CALLBACK) for target in targets):
                    raise InvalidSetting(
                        f"seeds={self.cfg.seeds}: the classifier would leave no attention accumulation; "
                        "expected callbacks=[default,attention_accumulation] (or seeds=auto / cams)"
                    )

    def compose_stage(self, stage: Stage) -> DictConfig:
        overrides = [*self.stage_overrides(stage), *self.cfg.stages.get(stage.name, [])]
        cfg = compose(stage.config_name, overrides=overrides)
        folder = self.folder(stage.name)
        with open_dict(cfg):
            cfg.paths.output_dir = str(folder)
        # What the console script would leave in .hydra/, so the folder stands alone (rca-cams reads it).
        (folder / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
        return cfg

    def is_done(self, stage: Stage) -> bool:
        if stage.name == "classifier" and self.cfg.get("train_dir"):
            return True
        return (self.folder(stage.name) / stage.done_file).is_file()

    def run_stage(self, stage: Stage) -> None:
        """Run ``stage`` unless it is done; its ``seconds`` in the state file add up every attempt.

        The state records when an attempt starts, so an attempt that never reached the end (killed, or
        stopped by an error) is counted when the stage is next visited: from its start to the last
        modification of a file in the stage's folder.
        """
        entry = self.state["stages"].get(stage.name, {})
        seconds = entry.get("seconds", 0.0)
        if "attempt_started" in entry:
            seconds += max(0.0, last_modification(self.folder(stage.name)) - entry["attempt_started"])
            self.record_stage_seconds(stage, seconds)
        if self.is_done(stage):
            log.info("Stage %s: finished earlier, skipped", stage.name)
            return
        log.info("Stage %s: running (outputs in %s)", stage.name, self.folder(stage.name))
        cfg = self.compose_stage(stage)
        self.record_stage_seconds(stage, seconds, attempt_started=time.time())
        start = time.perf_counter()
        stage.run(cfg)
        self.record_stage_seconds(stage, seconds + time.perf_counter() - start)

    def record_stage_seconds(
        self, stage: Stage, seconds: float, attempt_started: float | None = None
    ) -> None:
        """Write ``stage``'s seconds so far (and the start time of the attempt now running) to the state."""
        entry = {"seconds": seconds}
        if attempt_started is not None:
            entry["attempt_started"] = attempt_started
        self.state["stages"][stage.name] = entry
        write_json_atomically(self.state_path, self.state)

    def write_figures(self, report: dict) -> Path:
        """``figures/grid.png`` for CAM-split images that cover many classes (also logged to the loggers),
        and each scored stage's ``confusion_<stage>.png`` and ``iou_<stage>.png``."""
        settings = read_settings(self.cams_dir, "rca-cams")
        dataset = datamodule_for(self.cfg.data, settings["dataset"]).make_dataset(settings["split"])
        image_ids = pick_figure_images(dataset.image_ids, dataset.labels, self.cfg.report.figure_images)
        rows, mask_values = grid_rows(
            image_ids,
            [dataset.image_path(image_id) for image_id in image_ids],
            [dataset.mask_path(image_id) for image_id in image_ids],
            self.cams_dir,
            self.masks_dir,
            Segmenter.from_run(self.folder("segmentation"), source="seg"),
            dataset.class_names,
            self.cfg.report.panel_size,
        )
        grid = pipeline_figure(rows, mask_values, dataset.class_names, self.cfg.report.panel_size)
        path = write_grid(grid, self.run_dir / "figures" / "grid.png")
        write_score_figures({stage.name: self.folder(stage.name) for stage in STAGES}, report, path.parent)
        loggers = instantiate_loggers(self.cfg.get("logger"))
        scalars = {f"pipeline/{key}": report[key] for key in ("cam_miou", "pseudo_label_miou", "seg_miou")}
        for logger in loggers:
            logger.log_metrics(scalars)
        log_images(loggers, "pipeline/figures", [grid], captions=[", ".join(image_ids)])
        for logger in loggers:
            logger.save()
            logger.finalize("success")
        return path

    def run(self) -> dict:
        """Run every unfinished stage, then write and print the report; returns the report."""
        self.check_settings()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stage in STAGES:
            self.run_stage(stage)
        start = time.perf_counter()
        report = build_report(
            classifier_dir=self.classifier_dir,
            stage_dirs={stage.name: self.folder(stage.name) for stage in STAGES},
            stage_seconds={name: entry["seconds"] for name, entry in self.state["stages"].items()},
        )
        report["figures"] = [str(self.write_figures(report))]
        report["stage_seconds"]["report"] = time.perf_counter() - start
        write_json_atomically(self.run_dir / "report.json", report)
        print(format_report(report), flush=True)
        log.info("Report: %s", self.run_dir / "report.json")
        return report


def check_stage_entries(stages: object) -> DictConfig:
    """``stages`` if it maps names of :data:`STAGES` to lists of override strings, else InvalidSetting."""
    names = [stage.name for stage in STAGES]
    if not isinstance(stages, DictConfig):
        raise InvalidSetting(f"stages: expected a mapping of stage names {names} to lists, got {stages!r}")
    for name, overrides in stages.items():
        if name not in names:
            raise InvalidSetting(f"stages.{name}: unknown stage; expected one of {names}")
        if not isinstance(overrides, ListConfig) or not all(isinstance(o, str) for o in overrides):
            raise InvalidSetting(
                f"stages.{name}: expected a list of overrides like ['trainer.max_epochs=2'], "
                f"got {overrides!r}"
            )
    return stages


def last_modification(folder: Path) -> float:
    """The latest modification time (``time.time()`` scale) of ``folder`` and everything under it."""
    latest = folder.stat().st_mtime if folder.exists() else 0.0
    for root, directories, files in os.walk(folder):
        for name in [*directories, *files]:
            with contextlib.suppress(OSError):  # removed meanwhile
                latest = max(latest, os.stat(os.path.join(root, name), follow_symlinks=False).st_mtime)
    return latest


def run_pipeline(overrides: Sequence[str] = (), run_dir: str | os.PathLike = "pipeline_run") -> dict:
    """The Python form of ``rca-pipeline <overrides> hydra.run.dir=<run_dir>`` (for notebooks and scripts).

    Args:
        overrides: command-line style overrides of ``pipeline.yaml``.
        run_dir: the run folder; running again with the same folder skips finished stages.

    Returns:
        The report (what ``report.json`` holds).
    """
    config_dir = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("pipeline", overrides=list(overrides), return_hydra_config=True)
        check_overrides("pipeline", list(overrides), composed=cfg)  # what SettingsCheck does in a job
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
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
    return pipeline.run()["seg_miou"]


def main() -> None:
    """The console script: user errors end in one line and exit status 2."""
    run_console_script(hydra_main, "rca-pipeline")


if __name__ == "__main__":
    main()

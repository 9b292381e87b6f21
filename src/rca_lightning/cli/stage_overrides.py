"""What each stage of ``rca-pipeline`` is given (:class:`~rca_lightning.cli.pipeline_stages.StageArguments`):
the run's folders, the config-group choices and command-line overrides its config is composed with (the
stage's own command line, as it were), and the values set on the composed config: paths, and what earlier
stages recorded, read through :mod:`rca_lightning.pipeline_handoffs`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from rca_lightning.cli.pipeline_loggers import stage_logger_values
from rca_lightning.cli.pipeline_stages import StageArguments
from rca_lightning.pipeline_handoffs import (
    pseudo_mask_config_values,
    read_best_cam_threshold,
    read_cams_record,
)
from rca_lightning.pseudo.seed_sources import SEED_KINDS
from rca_lightning.utils.errors import InvalidSetting

# Keys of this config that are the pipeline's own, not rca-train's.
PIPELINE_KEYS = (
    "train_dir",
    "stages",
    "seg_recipe",
    "seg_recipes",
    "report",
    "seeds",
    "print_config",
    "optimized_metric",
    "refine",
    "irn_thresholds",
    "trusted_targets",
)
# Where rca-train's online attention accumulation leaves its maps (callbacks/attention_accumulation.yaml).
ATTENTION_FOLDER = "attention"
ATTENTION_CALLBACK = "AttentionAccumulationCallback"
# IRN's stages (relation labels, their score, the boundary network): they run with refine=random_walk.
IRN_STAGES = ("ir_labels", "ir_label_eval", "boundary")
# irn_thresholds=best_cam_threshold: IRN's thresholds as offsets from the seeds' best threshold t (IRN's own
# 0.30 / 0.05 / 0.25 at its t = 0.15): the relation labels' two passes, the walk's background.
IRN_THRESHOLD_OFFSETS = {"foreground_threshold": 0.15, "background_threshold": -0.10, "background": 0.10}
IRN_THRESHOLD_CHOICES = ("reference", "best_cam_threshold")
# The pipeline's `seeds` choices: auto, or a kind every seed-reading stage takes.
PIPELINE_SEEDS = ("auto", *SEED_KINDS)


def override_key(override: str) -> str:
    """The dotted key an override sets (``+refine.crf=null`` -> ``refine.crf``)."""
    return override.split("=", 1)[0].lstrip("+~")


def _is_pipeline_override(override: str) -> bool:
    return override_key(override).split(".", 1)[0] in PIPELINE_KEYS


class StageOverrides:
    """The folders of one run and the arguments of its stages (``for_<stage>``); :class:`Pipeline` runs them.

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
            o for o in command_line if override_key(o).split(".", 1)[0] in ("data", "paths")
        ]
        self.trainer_overrides = [f"trainer={choices['trainer']}"]
        # The trained stages log where the classifier does: the command line's logger choice and settings.
        self.logger_overrides = [o for o in command_line if override_key(o).split(".", 1)[0] == "logger"]
        self.seed = {"seed": cfg.seed}
        self.experiment = choices.get("experiment")
        # How the pseudo masks are refined (rca-pseudo's refine group) and the command line's refine.* values.
        self.refine = choices.get("refine", "crf")
        self.refine_overrides = [o for o in command_line if override_key(o).startswith("refine.")]

    @property
    def trusted_targets(self) -> dict[str, list[str]]:
        """``trusted_targets``: the command line's, for the stages that read a run folder's config."""
        return {"trusted_targets": list(self.cfg.trusted_targets)}

    def folder(self, stage: str) -> Path:
        return self.run_dir / stage

    @property
    def classifier_dir(self) -> Path:
        return Path(self.cfg.train_dir) if self.cfg.get("train_dir") else self.folder("classifier")

    @property
    def cams_dir(self) -> Path:
        return self.folder("cams") / "maps"

    @property
    def masks_dir(self) -> Path:
        return self.folder("pseudo_masks") / "masks"

    @property
    def ir_labels_dir(self) -> Path:
        return self.folder("ir_labels") / "masks"

    @property
    def boundary_dir(self) -> Path:
        return self.folder("boundary") / "boundary_maps"

    def logger_values(self, stage: str) -> dict[str, object]:
        """A trained stage's loggers with the rest of the run (:func:`stage_logger_values`)."""
        return stage_logger_values(self.cfg.get("logger"), self.run_dir, stage)

    def last_checkpoint(self, stage: str) -> dict[str, str]:
        """``ckpt_path``: ``stage``'s ``last.ckpt`` when it left one (an unfinished run resumes from it)."""
        last = self.folder(stage) / "checkpoints" / "last.ckpt"
        return {"ckpt_path": str(last)} if last.is_file() else {}

    # for_<stage>: what the stage's config is composed with (its own command line, as it were) and the values
    # set on it, before the user's `stages.<name>.overrides`.
    def for_classifier(self) -> StageArguments:
        resume = {} if self.cfg.get("ckpt_path") else self.last_checkpoint("classifier")
        return StageArguments(list(self.classifier_overrides), {**resume, **self.logger_values("classifier")})

    def for_cams(self) -> StageArguments:
        """Before the classifier finished, the seeds are left at the default (its config says whether it
        will leave attention; :meth:`check_settings` checks that)."""
        experiment = [f"experiment={self.experiment}"] if self.experiment else []
        classifier_done = (self.classifier_dir / "metrics.json").is_file()
        seeds = self.seed_values() if classifier_done else {}
        return StageArguments(
            [*self.data_overrides, *self.trainer_overrides, *experiment],
            {
                **self.seed,
                **self.trusted_targets,
                "train_dir": str(self.classifier_dir),
                "cams_dir": str(self.cams_dir),
                **seeds,
            },
        )

    def for_cam_eval(self) -> StageArguments:
        return StageArguments(list(self.data_overrides), {"cams_dir": str(self.cams_dir)})

    def for_ir_labels(self) -> StageArguments:
        thresholds = self.irn_threshold_values(("foreground_threshold", "background_threshold"))
        return StageArguments(
            [*self.data_overrides, "refine=ir_labels"],
            {**thresholds, "cams_dir": str(self.cams_dir), "masks_dir": str(self.ir_labels_dir)},
        )

    def for_ir_label_eval(self) -> StageArguments:
        return StageArguments(list(self.data_overrides), {"masks_dir": str(self.ir_labels_dir)})

    def for_boundary(self) -> StageArguments:
        """The frozen backbone is the classifier's (``stages.boundary.overrides=[classifier_dir=null]`` for
        boundary.yaml's own)."""
        folders = {
            "classifier_dir": str(self.classifier_dir),
            "ir_labels_dir": str(self.ir_labels_dir),
            "boundary_dir": str(self.boundary_dir),
        }
        return StageArguments(
            [*self.data_overrides, *self.trainer_overrides, *self.logger_overrides],
            {
                **self.seed,
                **self.trusted_targets,
                **folders,
                **self.last_checkpoint("boundary"),
                **self.logger_values("boundary"),
            },
        )

    def for_pseudo_masks(self) -> StageArguments:
        """The refiner: the method's recorded settings (for the CAM + CRF rules), or the boundary maps of
        the random walk; the command line's ``refine.*`` win over them."""
        if self.refine == "random_walk":
            refiner = {
                "refine.boundary_dir": str(self.boundary_dir),
                **self.irn_threshold_values(("background",)),
            }
        else:
            refiner = self.method_pseudo_mask_values()
        return StageArguments(
            [*self.data_overrides, f"refine={self.refine}", *self.refine_overrides],
            {**refiner, "cams_dir": str(self.cams_dir), "masks_dir": str(self.masks_dir)},
        )

    def for_pseudo_mask_eval(self) -> StageArguments:
        return StageArguments(list(self.data_overrides), {"masks_dir": str(self.masks_dir)})

    def for_segmentation(self) -> StageArguments:
        return StageArguments(
            [
                *self.data_overrides,
                *self.trainer_overrides,
                *self.logger_overrides,
                f"seg_experiment={self.seg_recipe}",
            ],
            {
                **self.seed,
                "pseudo_masks_dir": str(self.masks_dir),
                **self.last_checkpoint("segmentation"),
                **self.logger_values("segmentation"),
            },
        )

    @property
    def seg_recipe(self) -> str:
        """The segmentation stage's recipe (a ``seg_experiment/`` name): ``seg_recipe``, else the
        ``seg_recipes`` entry of the classifier's experiment (``synthetic``'s without one)."""
        if self.cfg.get("seg_recipe"):
            return str(self.cfg.seg_recipe)
        experiment = self.experiment or "synthetic"
        if experiment not in self.cfg.seg_recipes:
            raise InvalidSetting(
                f"experiment={experiment}: seg_recipes names no segmentation recipe for it; expected "
                f"seg_recipe=<a seg_experiment/ name> or seg_recipes.{experiment}=<recipe>"
            )
        return str(self.cfg.seg_recipes[experiment])

    def seed_values(self) -> dict[str, object]:
        """The ``seeds`` / ``attention_dir`` of the cams stage: ``seeds=auto`` takes the classifier's
        accumulated attention when it left one (the release's seeds), else its multi-scale CAMs."""
        attention_dir = self.classifier_dir / ATTENTION_FOLDER
        has_attention = (attention_dir / "index.json").is_file()
        kind = self.cfg.seeds
        if kind == "auto":
            kind = "attention" if has_attention else "cams"
        if kind == "cams":
            return {"seeds": "cams"}
        if not has_attention:
            raise InvalidSetting(
                f"seeds={kind}: the classifier left no attention accumulation in {attention_dir} "
                "(train it with callbacks=[default,attention_accumulation])"
            )
        # Attention seeds replace the CAMs: one scale is enough for the network's pass.
        one_scale = {"scales": [1.0], "flip": False} if kind == "attention" else {}
        return {"seeds": kind, "attention_dir": str(attention_dir), **one_scale}

    @property
    def best_cam_threshold(self) -> float | None:
        """The seeds' best background threshold (cam_eval, chosen with pixel labels); None before it ran."""
        record = self.folder("cam_eval") / "eval.json"
        return read_best_cam_threshold(record) if record.is_file() else None

    def irn_thresholds(self) -> dict[str, float]:
        """``irn_thresholds=best_cam_threshold``: IRN's thresholds moved with the seeds' best threshold t
        (:data:`IRN_THRESHOLD_OFFSETS`, no lower than 0); empty with ``reference`` (the refine configs'
        values, IRN's) or before cam_eval ran."""
        threshold = self.best_cam_threshold if self.cfg.irn_thresholds == "best_cam_threshold" else None
        if threshold is None:
            return {}
        return {key: round(max(threshold + offset, 0.0), 4) for key, offset in IRN_THRESHOLD_OFFSETS.items()}

    def irn_threshold_values(self, keys: tuple[str, ...]) -> dict[str, float]:
        """``refine.<key>`` of :meth:`irn_thresholds` for ``keys``."""
        thresholds = self.irn_thresholds()
        return {f"refine.{key}": thresholds[key] for key in keys if key in thresholds}

    def pixel_label_settings(self) -> list[str]:
        """The settings of this run chosen with pixel labels, as the report states them."""
        thresholds = self.irn_thresholds()
        if not thresholds or self.refine != "random_walk":
            return []
        return [
            f"irn_thresholds=best_cam_threshold: relation labels {thresholds['foreground_threshold']} / "
            f"{thresholds['background_threshold']}, random walk background {thresholds['background']}, from "
            f"the seeds' best threshold {self.best_cam_threshold} (scored against pixel labels)"
        ]

    def method_pseudo_mask_values(self) -> dict[str, float | None]:
        """The ``rca-pseudo`` values of the pseudo-mask settings the classifier's method recorded in
        ``cams.json`` (EPS: a constant background score, no CRF), checked against their schema; none before
        the cams stage ran."""
        record = self.folder("cams") / "cams.json"
        if not record.is_file():
            return {}
        return pseudo_mask_config_values(read_cams_record(record).pseudo_mask_settings)

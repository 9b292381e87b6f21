"""What each stage of ``rca-pipeline`` is given: the run's folders and the overrides its config is composed
with (the stage's own command line, as it were), derived from the pipeline's config and command line."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

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


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_pipeline_override(override: str) -> bool:
    return _override_key(override).split(".", 1)[0] in PIPELINE_KEYS


class StageOverrides:
    """The folders of one run and the overrides of its stages (``for_<stage>``); :class:`Pipeline` runs them.

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
        self.experiment = choices.get("experiment")
        # How the pseudo masks are refined (rca-pseudo's refine group) and the command line's refine.* values.
        self.refine = choices.get("refine", "crf")
        self.refine_overrides = [o for o in command_line if _override_key(o).startswith("refine.")]

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

    def last_checkpoint(self, stage: str) -> list[str]:
        """``ckpt_path=<last.ckpt>`` when ``stage`` left one (an unfinished run resumes from it), else []."""
        last = self.folder(stage) / "checkpoints" / "last.ckpt"
        return [f"ckpt_path={last}"] if last.is_file() else []

    # for_<stage>: the overrides the stage's config is composed with (its own command line, as it were),
    # before the user's `stages.<name>.overrides`.
    def for_classifier(self) -> list[str]:
        resume = [] if self.cfg.get("ckpt_path") else self.last_checkpoint("classifier")
        return [*self.classifier_overrides, *resume]

    def for_cams(self) -> list[str]:
        """Before the classifier finished, the seeds are left at the default (its config says whether it
        will leave attention; :meth:`check_settings` checks that)."""
        experiment = [f"experiment={self.experiment}"] if self.experiment else []
        classifier_done = (self.classifier_dir / "metrics.json").is_file()
        seeds = self.seed_overrides() if classifier_done else []
        return [
            *self.data_overrides,
            *self.trainer_overrides,
            *experiment,
            f"train_dir={self.classifier_dir}",
            f"cams_dir={self.cams_dir}",
            *seeds,
        ]

    def for_cam_eval(self) -> list[str]:
        return [*self.data_overrides, f"cams_dir={self.cams_dir}"]

    def for_ir_labels(self) -> list[str]:
        return [
            *self.data_overrides,
            "refine=ir_labels",
            *self.irn_threshold_overrides(("foreground_threshold", "background_threshold")),
            f"cams_dir={self.cams_dir}",
            f"masks_dir={self.ir_labels_dir}",
        ]

    def for_ir_label_eval(self) -> list[str]:
        return [*self.data_overrides, f"masks_dir={self.ir_labels_dir}"]

    def for_boundary(self) -> list[str]:
        """The frozen backbone is the classifier's (``stages.boundary.overrides=[classifier_dir=null]`` for
        boundary.yaml's own)."""
        return [
            *self.data_overrides,
            *self.trainer_overrides,
            f"classifier_dir={self.classifier_dir}",
            f"ir_labels_dir={self.ir_labels_dir}",
            f"boundary_dir={self.boundary_dir}",
            *self.last_checkpoint("boundary"),
        ]

    def for_pseudo_masks(self) -> list[str]:
        """The refiner: the method's recorded settings (for the CAM + CRF rules), or the boundary maps of
        the random walk; then the command line's ``refine.*``."""
        if self.refine == "random_walk":
            refiner = [
                "refine=random_walk",
                f"refine.boundary_dir={self.boundary_dir}",
                *self.irn_threshold_overrides(("background",)),
            ]
        else:
            refiner = [f"refine={self.refine}", *self.method_pseudo_mask_overrides()]
        return [
            *self.data_overrides,
            *refiner,
            *self.refine_overrides,
            f"cams_dir={self.cams_dir}",
            f"masks_dir={self.masks_dir}",
        ]

    def for_pseudo_mask_eval(self) -> list[str]:
        return [*self.data_overrides, f"masks_dir={self.masks_dir}"]

    def for_segmentation(self) -> list[str]:
        return [
            *self.data_overrides,
            *self.trainer_overrides,
            f"seg_experiment={self.seg_recipe}",
            f"pseudo_masks_dir={self.masks_dir}",
            *self.last_checkpoint("segmentation"),
        ]

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

    @property
    def best_cam_threshold(self) -> float | None:
        """The seeds' best background threshold (cam_eval, chosen with pixel labels); None before it ran."""
        record = self.folder("cam_eval") / "eval.json"
        return float(json.loads(record.read_text())["cams"]["best_threshold"]) if record.is_file() else None

    def irn_thresholds(self) -> dict[str, float]:
        """``irn_thresholds=best_cam_threshold``: IRN's thresholds moved with the seeds' best threshold t
        (:data:`IRN_THRESHOLD_OFFSETS`, no lower than 0); empty with ``reference`` (the refine configs'
        values, IRN's) or before cam_eval ran."""
        threshold = self.best_cam_threshold if self.cfg.irn_thresholds == "best_cam_threshold" else None
        if threshold is None:
            return {}
        return {key: round(max(threshold + offset, 0.0), 4) for key, offset in IRN_THRESHOLD_OFFSETS.items()}

    def irn_threshold_overrides(self, keys: tuple[str, ...]) -> list[str]:
        thresholds = self.irn_thresholds()
        return [f"refine.{key}={thresholds[key]}" for key in keys if key in thresholds]

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

    def method_pseudo_mask_overrides(self) -> list[str]:
        """The ``rca-pseudo`` settings the classifier's method recorded in ``cams.json`` (EPS: a constant
        background score, no CRF); none before the cams stage ran. The user's ``stages.pseudo_masks``
        overrides come after them, so they win."""
        record = self.folder("cams") / "cams.json"
        if not record.is_file():
            return []
        return list(json.loads(record.read_text()).get("pseudo_mask_overrides", []))

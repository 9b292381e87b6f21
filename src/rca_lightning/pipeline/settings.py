"""What one ``rca-pipeline`` run is, before any stage runs: its composed config, the parts of its command line
the stages share, and where each stage's outputs are."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from rca_lightning.pipeline.loggers import stage_logger_values
from rca_lightning.pseudo.seed_sources import SEED_KINDS
from rca_lightning.utils.errors import InvalidSetting

# Keys of pipeline.yaml that are the pipeline's own, not rca-train's (the classifier never sees them).
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
# The pipeline's `seeds` choices: auto, or a kind every seed-reading stage takes.
PIPELINE_SEEDS = ("auto", *SEED_KINDS)
IRN_THRESHOLD_CHOICES = ("reference", "best_cam_threshold")


def override_key(override: str) -> str:
    """The dotted key an override sets (``+refine.crf=null`` -> ``refine.crf``)."""
    return override.split("=", 1)[0].lstrip("+~")


def _top_key(override: str) -> str:
    return override_key(override).split(".", 1)[0]


class RunSettings:
    """One run's settings, read once from its composed ``pipeline.yaml`` and command line.

    Args:
        cfg: the composed ``pipeline.yaml``.
        command_line: this run's overrides (``hydra.overrides.task``).
        choices: this run's config-group choices (``hydra.runtime.choices``).
        run_dir: the run folder (``hydra.run.dir``).
        stand_in_keys: stage name -> the ``pipeline.yaml`` key that may name a finished folder standing in
            for that stage's outputs (``Stage.provided_by``).
    """

    def __init__(
        self,
        cfg: DictConfig,
        command_line: list[str],
        choices: dict,
        run_dir: Path,
        stand_in_keys: Mapping[str, str],
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        # The classifier's command line: rca-train's, without the pipeline's own keys.
        self.classifier_overrides = [o for o in command_line if _top_key(o) not in PIPELINE_KEYS]
        # What the stages share with the classifier: the dataset and paths (every stage), the hardware
        # (the stages with a trainer) and the loggers (the stages that train).
        self.data_overrides = [f"data={choices['data']}"] + [
            o for o in command_line if _top_key(o) in ("data", "paths")
        ]
        self.trainer_overrides = [f"trainer={choices['trainer']}"]
        self.logger_overrides = [o for o in command_line if _top_key(o) == "logger"]
        self.experiment = choices.get("experiment")
        # How the pseudo masks are refined (rca-pseudo's refine group) and the command line's refine.* values.
        self.refine = choices.get("refine", "crf")
        self.refine_overrides = [o for o in command_line if override_key(o).startswith("refine.")]
        # Stages whose outputs a folder given on the command line stands in for.
        self.provided: dict[str, Path] = {
            stage: Path(cfg[key]) for stage, key in stand_in_keys.items() if cfg.get(key)
        }

    def check(self) -> None:
        """InvalidSetting when ``seeds`` or ``irn_thresholds`` is not one of its choices."""
        if self.cfg.seeds not in PIPELINE_SEEDS:
            raise InvalidSetting(f"seeds={self.cfg.seeds!r}: expected one of {list(PIPELINE_SEEDS)}")
        if self.cfg.irn_thresholds not in IRN_THRESHOLD_CHOICES:
            raise InvalidSetting(
                f"irn_thresholds={self.cfg.irn_thresholds!r}: expected one of {list(IRN_THRESHOLD_CHOICES)}"
            )

    @property
    def seed(self) -> dict[str, int]:
        return {"seed": int(self.cfg.seed)}

    @property
    def trusted_targets(self) -> dict[str, list[str]]:
        """``trusted_targets``: the command line's, for the stages that read a run folder's config."""
        return {"trusted_targets": list(self.cfg.trusted_targets)}

    def folder(self, stage: str) -> Path:
        """Where ``stage``'s outputs are: its folder of the run, or the folder that stands in for it."""
        return self.provided.get(stage, self.run_dir / stage)

    def last_checkpoint(self, stage: str) -> dict[str, str]:
        """``ckpt_path``: ``stage``'s ``last.ckpt`` when it left one (an unfinished run resumes from it)."""
        last = self.run_dir / stage / "checkpoints" / "last.ckpt"
        return {"ckpt_path": str(last)} if last.is_file() else {}

    def logger_values(self, stage: str) -> dict[str, object]:
        """A trained stage's loggers with the rest of the run (:func:`stage_logger_values`)."""
        return stage_logger_values(self.cfg.get("logger"), self.run_dir, stage)

    @property
    def seg_recipe(self) -> str:
        """The segmentation recipe (a ``seg_experiment/`` name): ``seg_recipe``, else the ``seg_recipes``
        entry of the classifier's experiment (``synthetic``'s without one)."""
        if self.cfg.get("seg_recipe"):
            return str(self.cfg.seg_recipe)
        experiment = self.experiment or "synthetic"
        if experiment not in self.cfg.seg_recipes:
            raise InvalidSetting(
                f"experiment={experiment}: seg_recipes names no segmentation recipe for it; expected "
                f"seg_recipe=<a seg_experiment/ name> or seg_recipes.{experiment}=<recipe>"
            )
        return str(self.cfg.seg_recipes[experiment])


__all__ = ["IRN_THRESHOLD_CHOICES", "PIPELINE_KEYS", "PIPELINE_SEEDS", "RunSettings", "override_key"]

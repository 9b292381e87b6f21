"""The stages of ``rca-pipeline``, declared (:class:`~rca_lightning.pipeline.stage.Stage`).

classifier (``rca-train``) -> cams (``rca-cams``) -> cam_eval (``rca-eval``) -> [with ``refine=random_walk``:
ir_labels (``rca-pseudo refine=ir_labels``) -> ir_label_eval (``rca-eval``) -> boundary (``rca-boundary``)] ->
pseudo_masks (``rca-pseudo``) -> pseudo_mask_eval (``rca-eval``) -> segmentation (``rca-seg``).

Each stage is composed from its console script's config with the choices and overrides it shares with the
run (dataset, paths, hardware, loggers), then given paths and settings as typed values; what an earlier stage
records (the classifier's attention maps, the method's pseudo-mask settings in ``cams.json``, the seeds' best
threshold) is declared as :class:`~rca_lightning.pipeline.stage.Recorded` and read once that stage finished.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from rca_lightning.pipeline.settings import RunSettings
from rca_lightning.pipeline.stage import Recorded, Stage, StageArguments
from rca_lightning.pseudo.stage_records import (
    pseudo_mask_config_values,
    read_best_cam_threshold,
    read_cams_record,
)
from rca_lightning.tasks.boundary import boundary
from rca_lightning.tasks.cams import cams
from rca_lightning.tasks.evaluate import evaluate
from rca_lightning.tasks.pseudo import pseudo
from rca_lightning.tasks.seg import segment
from rca_lightning.tasks.train import train
from rca_lightning.utils.errors import InvalidSetting

# Where rca-train's online attention accumulation leaves its maps (callbacks/attention_accumulation.yaml).
ATTENTION_FOLDER = "attention"
ATTENTION_CALLBACK = "AttentionAccumulationCallback"
# irn_thresholds=best_cam_threshold: IRN's thresholds as offsets from the seeds' best threshold t (IRN's own
# 0.30 / 0.05 / 0.25 at its t = 0.15): the relation labels' two passes, the walk's background.
IRN_THRESHOLD_OFFSETS = {"foreground_threshold": 0.15, "background_threshold": -0.10, "background": 0.10}
# The method's pseudo-mask settings (cams.json) as the refiner's values (crf, none, saliency).
METHOD_REFINE_KEYS = ("refine.background_threshold", "refine.crf")


# Where each stage leaves what the next ones read.
def _cams_dir(settings: RunSettings) -> Path:
    return settings.folder("cams") / "maps"


def _masks_dir(settings: RunSettings) -> Path:
    return settings.folder("pseudo_masks") / "masks"


def _ir_labels_dir(settings: RunSettings) -> Path:
    return settings.folder("ir_labels") / "masks"


def _boundary_dir(settings: RunSettings) -> Path:
    return settings.folder("boundary") / "boundary_maps"


def _random_walk(settings: RunSettings) -> bool:
    return settings.refine == "random_walk"


def _thresholds_from_cam_eval(settings: RunSettings) -> bool:
    return settings.cfg.irn_thresholds == "best_cam_threshold"


# The classifier.
def _classifier_arguments(settings: RunSettings) -> StageArguments:
    resume = {} if settings.cfg.get("ckpt_path") else settings.last_checkpoint("classifier")
    return StageArguments(
        list(settings.classifier_overrides), {**resume, **settings.logger_values("classifier")}
    )


def _classifier_leaves_attention(settings: RunSettings, cfg: DictConfig) -> None:
    """``seeds=attention|max`` needs the classifier's online attention accumulation."""
    if settings.cfg.seeds in ("attention", "max"):
        targets = [str(c.get("_target_", "")) for c in (cfg.get("callbacks") or {}).values() if c]
        if not any(target.endswith(ATTENTION_CALLBACK) for target in targets):
            raise InvalidSetting(
                f"seeds={settings.cfg.seeds}: the classifier would leave no attention accumulation; "
                "expected callbacks=[default,attention_accumulation] (or seeds=auto / cams)"
            )


# The seeds.
def _cams_arguments(settings: RunSettings) -> StageArguments:
    experiment = [f"experiment={settings.experiment}"] if settings.experiment else []
    return StageArguments(
        [*settings.data_overrides, *settings.trainer_overrides, *experiment],
        {
            **settings.seed,
            **settings.trusted_targets,
            "train_dir": str(settings.folder("classifier")),
            "cams_dir": str(_cams_dir(settings)),
        },
    )


def seed_values(settings: RunSettings) -> dict[str, object]:
    """The ``seeds`` / ``attention_dir`` of the cams stage: ``seeds=auto`` takes the classifier's accumulated
    attention when it left one (the release's seeds), else its multi-scale CAMs."""
    attention_dir = settings.folder("classifier") / ATTENTION_FOLDER
    has_attention = (attention_dir / "index.json").is_file()
    kind = settings.cfg.seeds
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


def _cams_records(settings: RunSettings) -> tuple[Recorded, ...]:
    return (Recorded("classifier", ("seeds", "attention_dir", "scales", "flip"), seed_values),)


# IRN's thresholds, moved with the seeds' best threshold (irn_thresholds=best_cam_threshold).
def best_cam_threshold(settings: RunSettings) -> float | None:
    """The seeds' best background threshold (cam_eval, chosen with pixel labels); None before it ran."""
    record = settings.folder("cam_eval") / "eval.json"
    return read_best_cam_threshold(record) if record.is_file() else None


def irn_thresholds(settings: RunSettings) -> dict[str, float]:
    """``irn_thresholds=best_cam_threshold``: IRN's thresholds moved with the seeds' best threshold t
    (:data:`IRN_THRESHOLD_OFFSETS`, no lower than 0); empty with ``reference`` or before cam_eval ran."""
    threshold = best_cam_threshold(settings) if _thresholds_from_cam_eval(settings) else None
    if threshold is None:
        return {}
    return {key: round(max(threshold + offset, 0.0), 4) for key, offset in IRN_THRESHOLD_OFFSETS.items()}


def _irn_threshold_records(*keys: str) -> tuple[Recorded, ...]:
    def read(settings: RunSettings) -> dict[str, object]:
        thresholds = irn_thresholds(settings)
        return {f"refine.{key}": thresholds[key] for key in keys if key in thresholds}

    return (Recorded("cam_eval", tuple(f"refine.{key}" for key in keys), read),)


def _moved_thresholds_input(settings: RunSettings) -> tuple[str, ...]:
    return ("cam_eval",) if _thresholds_from_cam_eval(settings) else ()


def pixel_label_settings(settings: RunSettings) -> list[str]:
    """The settings of this run chosen with pixel labels, as the report states them."""
    thresholds = irn_thresholds(settings)
    if not thresholds or not _random_walk(settings):
        return []
    return [
        f"irn_thresholds=best_cam_threshold: relation labels {thresholds['foreground_threshold']} / "
        f"{thresholds['background_threshold']}, random walk background {thresholds['background']}, from "
        f"the seeds' best threshold {best_cam_threshold(settings)} (scored against pixel labels)"
    ]


# IRN's relation labels and boundary network.
def _ir_labels_arguments(settings: RunSettings) -> StageArguments:
    return StageArguments(
        [*settings.data_overrides, "refine=ir_labels"],
        {"cams_dir": str(_cams_dir(settings)), "masks_dir": str(_ir_labels_dir(settings))},
    )


def _ir_labels_records(settings: RunSettings) -> tuple[Recorded, ...]:
    if not _thresholds_from_cam_eval(settings):
        return ()
    return _irn_threshold_records("foreground_threshold", "background_threshold")


def _boundary_arguments(settings: RunSettings) -> StageArguments:
    """The frozen backbone is the classifier's (``stages.boundary.overrides=[classifier_dir=null]`` for
    boundary.yaml's own)."""
    return StageArguments(
        [*settings.data_overrides, *settings.trainer_overrides, *settings.logger_overrides],
        {
            **settings.seed,
            **settings.trusted_targets,
            "classifier_dir": str(settings.folder("classifier")),
            "ir_labels_dir": str(_ir_labels_dir(settings)),
            "boundary_dir": str(_boundary_dir(settings)),
            **settings.last_checkpoint("boundary"),
            **settings.logger_values("boundary"),
        },
    )


# The pseudo masks.
def _pseudo_masks_inputs(settings: RunSettings) -> tuple[str, ...]:
    if not _random_walk(settings):
        return ("cams",)
    return ("cams", "boundary", *_moved_thresholds_input(settings))


def _pseudo_masks_arguments(settings: RunSettings) -> StageArguments:
    walk = {"refine.boundary_dir": str(_boundary_dir(settings))} if _random_walk(settings) else {}
    return StageArguments(
        [*settings.data_overrides, f"refine={settings.refine}", *settings.refine_overrides],
        {**walk, "cams_dir": str(_cams_dir(settings)), "masks_dir": str(_masks_dir(settings))},
    )


def method_pseudo_mask_values(settings: RunSettings) -> dict[str, object]:
    """The ``rca-pseudo`` values of the pseudo-mask settings the classifier's method recorded in
    ``cams.json`` (EPS: a constant background score, no CRF), checked against their schema."""
    record = read_cams_record(settings.folder("cams") / "cams.json")
    return pseudo_mask_config_values(record.pseudo_mask_settings)


def _pseudo_masks_records(settings: RunSettings) -> tuple[Recorded, ...]:
    """The random walk's background follows cam_eval (``irn_thresholds=best_cam_threshold``); the other
    refiners take the method's recorded settings; the command line's ``refine.*`` win over both."""
    if not _random_walk(settings):
        return (Recorded("cams", METHOD_REFINE_KEYS, method_pseudo_mask_values),)
    return _irn_threshold_records("background") if _thresholds_from_cam_eval(settings) else ()


# The segmentation network.
def _segmentation_arguments(settings: RunSettings) -> StageArguments:
    return StageArguments(
        [
            *settings.data_overrides,
            *settings.trainer_overrides,
            *settings.logger_overrides,
            f"seg_experiment={settings.seg_recipe}",
        ],
        {
            **settings.seed,
            "pseudo_masks_dir": str(_masks_dir(settings)),
            "figure_sample": settings.cfg.report.figure_images,
            **settings.last_checkpoint("segmentation"),
            **settings.logger_values("segmentation"),
        },
    )


def _masks_to_score(folder: str):
    def arguments(settings: RunSettings) -> StageArguments:
        return StageArguments(
            list(settings.data_overrides), {"masks_dir": str(settings.folder(folder) / "masks")}
        )

    return arguments


def _reads(*stages: str):
    return lambda settings: stages


STAGES = (
    Stage(
        "classifier",
        "train",
        "metrics.json",
        train,
        _reads(),
        _classifier_arguments,
        provided_by="train_dir",
        check=_classifier_leaves_attention,
    ),
    Stage("cams", "cams", "cams.json", cams, _reads("classifier"), _cams_arguments, _cams_records),
    Stage(
        "cam_eval",
        "eval",
        "eval.json",
        evaluate,
        _reads("cams"),
        lambda settings: StageArguments(
            list(settings.data_overrides), {"cams_dir": str(_cams_dir(settings))}
        ),
    ),
    Stage(
        "ir_labels",
        "pseudo",
        "pseudo.json",
        pseudo,
        lambda settings: ("cams", *_moved_thresholds_input(settings)),
        _ir_labels_arguments,
        _ir_labels_records,
        runs_when=_random_walk,
    ),
    Stage(
        "ir_label_eval",
        "eval",
        "eval.json",
        evaluate,
        _reads("ir_labels"),
        _masks_to_score("ir_labels"),
        runs_when=_random_walk,
    ),
    Stage(
        "boundary",
        "boundary",
        "boundary.json",
        boundary,
        _reads("classifier", "ir_labels"),
        _boundary_arguments,
        runs_when=_random_walk,
    ),
    Stage(
        "pseudo_masks",
        "pseudo",
        "pseudo.json",
        pseudo,
        _pseudo_masks_inputs,
        _pseudo_masks_arguments,
        _pseudo_masks_records,
    ),
    Stage(
        "pseudo_mask_eval",
        "eval",
        "eval.json",
        evaluate,
        _reads("pseudo_masks"),
        _masks_to_score("pseudo_masks"),
    ),
    Stage(
        "segmentation", "seg_train", "metrics.json", segment, _reads("pseudo_masks"), _segmentation_arguments
    ),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


__all__ = ["STAGES", "STAGE_NAMES", "irn_thresholds", "pixel_label_settings", "seed_values"]

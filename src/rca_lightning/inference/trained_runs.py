"""Trained run folders -> networks ready for inference: the one loader of the project.

Three kinds of folder hold trained networks:

- an ``rca-train`` run: ``metrics.json`` (the evaluated checkpoint and the dataset), ``.hydra/config.yaml``
  (``model``) and ``checkpoints/``: a classifier;
- an ``rca-seg`` run: the same files with ``seg_model``: a segmentation network;
- an ``rca-pipeline`` run: both, as its ``classifier/`` and ``segmentation/`` stage folders.

Configs are built only from the classes the shipped configs build and those the user names
(``trusted_targets``), checked on the resolved tree that is built, and checkpoints are read with
``weights_only=True`` (:mod:`rca_lightning.utils.safe_loading`): nothing in a folder the user points at is
executed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from hydra.utils import instantiate
from lightning import LightningModule
from omegaconf import DictConfig

from rca_lightning.imaging.image_arrays import IMAGENET_MEAN, IMAGENET_STD
from rca_lightning.pseudo.stage_records import read_cams_record
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from rca_lightning.utils.safe_loading import load_checkpoint, load_run_config, run_config_keys
from rca_lightning.utils.setting_ranges import number_in_range
from rca_lightning.utils.state_files import read_json_object

log = logging.getLogger(__name__)

SOURCES = ("auto", "seg", "cams")


class TrainingRun(NamedTuple):
    """The files of a trained classifier.

    Attributes:
        checkpoint: the weights to load.
        selection: how they were chosen: the run's ``checkpoint_selection`` (``last``, ``best_map``,
            ``best_cam_miou``) or ``ckpt_path`` when the user named the file.
        model_cfg: the model config the checkpoint was trained with.
        dataset: the dataset the run recorded, or None.
        summary: the run's ``metrics.json`` (empty for a bare checkpoint).
    """

    checkpoint: Path
    selection: str
    model_cfg: DictConfig
    dataset: dict | None
    summary: dict


def read_run_summary(run_dir: Path, script: str, setting: str | None = None) -> dict:
    """``run_dir/metrics.json``; MissingInput / InvalidData naming the file (or ``setting=run_dir`` when the
    folder itself is missing) when it is absent or broken."""
    if not run_dir.is_dir():
        named = f"{setting}={run_dir}" if setting else str(run_dir)
        raise MissingInput(f"{named} not found: expected a folder written by {script}")
    summary_file = run_dir / "metrics.json"
    if not summary_file.is_file():
        raise MissingInput(f"{summary_file} not found: expected {run_dir} to be a finished {script} run")
    return read_json_object(summary_file, f"what {script} writes")


def resolve_training_run(
    train_dir: str | Path | None,
    ckpt_path: str | Path | None,
    model_cfg: DictConfig | None,
    trusted_targets: Iterable[str] = (),
) -> TrainingRun:
    """The checkpoint, its selection, model config and dataset from ``train_dir`` or ``ckpt_path``.

    With ``train_dir`` the checkpoint is the one the run's ``metrics.json`` names (its ``checkpoint=``
    choice: the last epoch's unless the user chose otherwise when training); ``ckpt_path`` overrides it,
    and without ``train_dir`` the model is built from ``model_cfg``. Every file is checked here, before
    anything is built: a missing one is a MissingInput naming it. The run's ``model`` may build only the
    shipped configs' classes and ``trusted_targets`` (the setting of that name).
    """
    if ckpt_path and not Path(ckpt_path).is_file():
        raise MissingInput(
            f"ckpt_path={ckpt_path} not found: expected a checkpoint file written by rca-train"
        )
    if not train_dir:
        if not ckpt_path:
            raise InvalidSetting(
                "train_dir / ckpt_path: expected train_dir=<rca-train run folder> or ckpt_path=<checkpoint>, "
                "got neither"
            )
        return TrainingRun(Path(ckpt_path), "ckpt_path", model_cfg, None, {})
    train_dir = Path(train_dir)
    summary = read_run_summary(train_dir, "rca-train", "train_dir")
    if ckpt_path:
        checkpoint, selection = Path(ckpt_path), "ckpt_path"
    else:
        checkpoint = _named_checkpoint(train_dir, summary)
        selection = summary.get("checkpoint_selection", "last")
        if not checkpoint.is_file():
            raise MissingInput(
                f"{checkpoint} not found: expected the checkpoint {train_dir / 'metrics.json'} names "
                f"(checkpoint={selection})"
            )
    run_config = train_dir / ".hydra" / "config.yaml"
    if run_config.is_file():  # the model the checkpoint was trained with, built only from allowed classes
        model_cfg = load_run_config(run_config, "model", trusted_targets)
    elif model_cfg is None:
        raise MissingInput(f"{run_config} not found: expected the config rca-train saves with its run")
    else:
        log.warning("%s not found; building the model from the composed config", run_config)
    return TrainingRun(checkpoint, selection, model_cfg, summary.get("dataset"), summary)


def _named_checkpoint(train_dir: Path, summary: dict) -> Path:
    """The checkpoint ``metrics.json`` names (``last.ckpt`` when it names none). One inside the folder the
    run was written in (``output_dir``) is read at the same place inside ``train_dir``, so a run folder
    moved or copied whole reads its own weights."""
    named = summary.get("checkpoint")
    if named is None:
        return train_dir / "checkpoints" / "last.ckpt"
    if not isinstance(named, str) or not named:
        raise InvalidData(f"{train_dir / 'metrics.json'}: checkpoint is {named!r:.60}; expected a file path")
    checkpoint, written_in = Path(named), summary.get("output_dir")
    if isinstance(written_in, str) and checkpoint.is_relative_to(written_in):
        return train_dir / checkpoint.relative_to(written_in)
    return checkpoint


def _load_weights(model: torch.nn.Module, state: dict, checkpoint: Path) -> None:
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:  # missing, unexpected or other-shaped weights, listed over many lines
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        first = details[0][:200] if details else "its weights differ"
        raise InvalidData(
            f"{checkpoint}: does not fit the model config ({first}); expected a checkpoint of that model"
        ) from error


def load_classifier(model_cfg: DictConfig, checkpoint: Path, class_names: list[str]) -> LightningModule:
    """Instantiate the classifier and load the checkpoint's weights (memory bank buffers included).

    The checkpoint is read with ``weights_only=True`` (``load_checkpoint``): nothing in it is called.
    """
    if not checkpoint.is_file():
        raise MissingInput(
            f"checkpoint {checkpoint} not found: expected a checkpoint file (ckpt_path / train_dir)"
        )
    state = load_checkpoint(checkpoint)
    trained_names = state.get("hyper_parameters", {}).get("class_names")
    if trained_names is not None and list(trained_names) != list(class_names):
        raise InvalidData(
            f"{checkpoint}: trained on classes {list(trained_names)}, expected data.class_names {class_names}"
        )
    model = instantiate(model_cfg)
    _load_weights(model, state, checkpoint)
    return model


def load_segmentation_network(
    segmentation_dir: str | Path, trusted_targets: Iterable[str] = ()
) -> LightningModule:
    """The network of a finished ``rca-seg`` folder (its config and evaluated checkpoint), in eval mode; its
    ``seg_model`` may build only the shipped configs' classes and ``trusted_targets``."""
    segmentation_dir = Path(segmentation_dir)
    summary = read_run_summary(segmentation_dir, "rca-seg")
    checkpoint = Path(summary.get("checkpoint") or segmentation_dir / "checkpoints" / "last.ckpt")
    run_config = segmentation_dir / ".hydra" / "config.yaml"
    if not run_config.is_file():
        raise MissingInput(f"{run_config} not found: expected the config rca-seg saves with its run")
    model = instantiate(load_run_config(run_config, "seg_model", trusted_targets))
    _load_weights(model, load_checkpoint(checkpoint), checkpoint)
    return model.eval()


@dataclass(frozen=True)
class TrainedRun:
    """A trained network of a run folder, ready for inference.

    Attributes:
        source: ``seg`` (a segmentation network: masks are the argmax of its logits) or ``cams`` (a
            classifier: masks from its CAMs and a background threshold).
        model: the network, in eval mode (``SegLitModule`` or a ``WSSSMethod``).
        class_names: the C foreground classes (mask value ``i + 1`` is ``class_names[i]``).
        image_mean, image_std: the normalisation the network was trained with.
        folder: the stage folder the network came from.
        checkpoint: its weights.
        dataset_root: the root of the dataset it was trained on, as the run recorded it (None if none).
        cam_threshold: for ``cams``, the background threshold the run's evaluation chose (None if none).
        cam_threshold_origin: where that threshold comes from (it was chosen with pixel labels).
        cam_views: for ``cams``, the scales and flip the run's CAMs were computed with (None if unknown).
    """

    source: str
    model: LightningModule
    class_names: list[str]
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    folder: Path
    checkpoint: Path
    dataset_root: str | None = None
    cam_threshold: float | None = None
    cam_threshold_origin: str | None = None
    cam_views: tuple[list[float], bool] | None = None


def stage_folders(run_dir: Path) -> tuple[Path | None, Path | None]:
    """(segmentation folder, classifier folder) of a pipeline, ``rca-seg`` or ``rca-train`` run folder."""
    if (run_dir / "classifier").is_dir() or (run_dir / "segmentation").is_dir():  # a pipeline run
        found = [run_dir / name for name in ("segmentation", "classifier")]
        return tuple(folder if (folder / "metrics.json").is_file() else None for folder in found)
    run_config = run_dir / ".hydra" / "config.yaml"
    if not (run_dir / "metrics.json").is_file() or not run_config.is_file():
        raise MissingInput(
            f"run_dir={run_dir}: no metrics.json and .hydra/config.yaml; expected a finished rca-pipeline, "
            "rca-seg or rca-train run folder"
        )
    return (run_dir, None) if "seg_model" in run_config_keys(run_config) else (None, run_dir)


def _pipeline_cam_settings(run_dir: Path) -> tuple[float | None, str | None, tuple[list[float], bool] | None]:
    """The background threshold ``rca-eval`` chose and the views ``rca-cams`` used, in a pipeline run."""
    threshold, origin, views = None, None, None
    report = run_dir / "report.json"
    chosen = (
        read_json_object(report, "the report rca-pipeline writes").get("cam_threshold")
        if report.is_file()
        else None
    )
    if chosen is not None:
        threshold = number_in_range(f"{report}: cam_threshold", chosen, 0.0, 1.0)
        origin = f"{report} cam_threshold (the CAM sweep on the train split's ground truth)"
    cams = run_dir / "cams" / "cams.json"
    if cams.is_file():
        record = read_cams_record(cams)
        if record.scales is None or record.flip is None:
            raise InvalidData(f"{cams}: expected scales and flip (the views rca-cams used), got none")
        views = (list(record.scales), record.flip)
    return threshold, origin, views


def load_trained_run(
    run_dir: str | Path, source: str = "auto", trusted_targets: Iterable[str] = ()
) -> TrainedRun:
    """The network of a run folder for inference.

    Args:
        run_dir: an ``rca-pipeline``, ``rca-seg`` or ``rca-train`` run folder.
        source: ``seg`` (the segmentation network), ``cams`` (the classifier) or ``auto`` (the segmentation
            network when the run has one, else the classifier).
        trusted_targets: classes the run's config may build beyond the shipped configs' (the
            ``trusted_targets`` setting).

    Raises:
        InvalidSetting: ``source`` is unknown, or asks for a network the run does not have.
        MissingInput / InvalidData: a file of the run is missing or broken (named).
    """
    if source not in SOURCES:
        raise InvalidSetting(f"source={source}: expected one of {list(SOURCES)}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingInput(
            f"run_dir={run_dir} not found: expected an rca-pipeline, rca-seg or rca-train run folder"
        )
    segmentation_dir, classifier_dir = stage_folders(run_dir)
    if source == "auto":
        source = "seg" if segmentation_dir is not None else "cams"
    if source == "seg":
        if segmentation_dir is None:
            raise InvalidSetting(
                f"source=seg: {run_dir} has no trained segmentation network; expected an rca-seg or complete "
                "rca-pipeline run (source=cams uses the classifier)"
            )
        model = load_segmentation_network(segmentation_dir, trusted_targets)
        summary = read_run_summary(segmentation_dir, "rca-seg")
        return TrainedRun(
            "seg",
            model,
            list(model.hparams.class_names or summary["dataset"]["class_names"]),
            tuple(model.hparams.image_mean),
            tuple(model.hparams.image_std),
            segmentation_dir,
            Path(summary.get("checkpoint") or segmentation_dir / "checkpoints" / "last.ckpt"),
            (summary.get("dataset") or {}).get("root"),
        )
    if classifier_dir is None:
        raise InvalidSetting(f"source=cams: {run_dir} has no trained classifier; expected an rca-train run")
    run = resolve_training_run(classifier_dir, None, None, trusted_targets)
    class_names = list((run.dataset or {}).get("class_names") or [])
    if not class_names:
        raise InvalidData(
            f"{classifier_dir / 'metrics.json'}: no dataset class_names; expected what rca-train writes"
        )
    model = load_classifier(run.model_cfg, run.checkpoint, class_names).eval()
    threshold, origin, views = None, None, None
    if classifier_dir != run_dir:
        threshold, origin, views = _pipeline_cam_settings(run_dir)
    evaluated = run.summary.get("metrics", {}).get("val/cam_threshold")
    if threshold is None and evaluated is not None:
        threshold = round(float(evaluated), 4)
        origin = f"{classifier_dir / 'metrics.json'} val/cam_threshold (the val split's ground truth)"
    return TrainedRun(
        "cams",
        model,
        class_names,
        IMAGENET_MEAN,
        IMAGENET_STD,
        classifier_dir,
        run.checkpoint,
        (run.dataset or {}).get("root"),
        threshold,
        origin,
        views,
    )


__all__ = [
    "SOURCES",
    "TrainedRun",
    "TrainingRun",
    "load_classifier",
    "load_segmentation_network",
    "load_trained_run",
    "read_run_summary",
    "resolve_training_run",
    "stage_folders",
]

"""What the stages share: settings files that tie an output folder to its dataset and settings, the
datamodule built for a recorded dataset, the seeds a stage reads, a trainer's metrics as floats, and the value
a job returns to a sweeper."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning import LightningDataModule
from omegaconf import DictConfig, OmegaConf

from rca_lightning.data import VOCSegmentationDataset
from rca_lightning.pseudo.seed_sources import SeedSource
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from rca_lightning.utils.state_files import read_json_object

SETTINGS_FILE = "settings.json"
log = logging.getLogger(__name__)


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The one-number entries of a trainer's ``callback_metrics`` as plain floats (for ``metrics.json``)."""
    return {name: float(value) for name, value in metrics.items() if torch.as_tensor(value).numel() == 1}


def swept_value(cfg: DictConfig, values: dict, multirun: bool) -> float | None:
    """The value of ``cfg.optimized_metric`` among ``values`` (a run's metrics, or the pipeline's report),
    which a job returns for sweepers; None when that setting is null.

    A sweep needs the value, so a multirun job without it fails (InvalidSetting); a single run without it
    only warns.
    """
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if values.get(name) is None:
        known = sorted(key for key, value in values.items() if isinstance(value, int | float))
        message = f"optimized_metric={name!r} was not recorded; expected one of the run's {known}"
        if multirun:
            raise InvalidSetting(message)
        log.warning(message)
        return None
    return float(values[name])


def check_mask_folder(folder: Path, setting: str, source: str) -> None:
    """MissingInput unless ``folder`` (the value of ``setting``) holds ``.png`` masks (written by ``source``);
    checked before anything is built."""
    if not folder.is_dir():
        raise MissingInput(
            f"{setting}={folder} not found: expected a folder of <image id>.png masks ({source})"
        )
    if next(folder.glob("*.png"), None) is None:
        raise MissingInput(f"{setting}={folder} holds no .png file: expected <image id>.png masks ({source})")


def read_settings(folder: str | Path, stage: str, setting: str | None = None) -> dict:
    """The ``settings.json`` a stage wrote in ``folder`` (the value of ``setting``, named in errors), with
    its ``split`` and ``dataset`` ({root, class_names}); MissingInput naming the folder or file when absent,
    InvalidData naming the file when it is damaged or foreign."""
    path = Path(folder) / SETTINGS_FILE
    named = f"{setting}={folder}" if setting else str(folder)
    if not Path(folder).is_dir():
        raise MissingInput(f"{named} not found: expected a folder written by {stage}")
    if not path.is_file():
        raise MissingInput(f"{path} not found: expected {named} to be a folder written by {stage}")
    settings = read_json_object(path, f"the settings {stage} wrote")
    dataset = settings.get("dataset")
    if (
        not isinstance(settings.get("split"), str)
        or not isinstance(dataset, dict)
        or not isinstance(dataset.get("root"), str)
        or not isinstance(dataset.get("class_names"), list)
        or not all(isinstance(name, str) for name in dataset["class_names"])
    ):
        raise InvalidData(
            f"{path}: expected the settings {stage} wrote, with a split name and a dataset "
            f"{{root, class_names}}; got split={settings.get('split')!r}, dataset={dataset!r}"
        )
    return settings


# Where settings.json was written, recorded beside the settings (not one of them: a moved folder resumes).
WRITTEN_IN = "written_in"


def _same_setting(recorded: object, current: object, recorded_folder: object, folder: Path) -> bool:
    """Equal, or two absolute paths at the same place relative to their folder (a run folder moved whole)."""
    if recorded == current:
        return True
    paths = (recorded, current, recorded_folder)
    if not all(isinstance(path, str) and os.path.isabs(path) for path in paths):
        return False
    return os.path.relpath(recorded, recorded_folder) == os.path.relpath(current, folder)


def claim_output_folder(folder: Path, settings: dict) -> None:
    """Record ``settings`` in ``folder``, or check that a run resuming there used the same ones (a path
    inside the folder's run moved with it counts as the same)."""
    path = folder / SETTINGS_FILE
    folder = folder.resolve()
    if path.is_file():
        recorded = read_json_object(path, "the settings of the run that started this folder")
        written_in = recorded.pop(WRITTEN_IN, None)
        changed = sorted(
            key
            for key in set(recorded) | set(settings)
            if not _same_setting(recorded.get(key), settings.get(key), written_in, folder)
        )
        if changed:
            raise InvalidSetting(
                f"{path} records other settings for {changed} (e.g. {changed[0]}: "
                f"{recorded.get(changed[0])!r} vs {settings.get(changed[0])!r}); expected the same settings "
                "to resume, or a new output folder"
            )
        return
    write_json_atomically(path, {**settings, WRITTEN_IN: str(folder)})


def datamodule_for(
    data_cfg: DictConfig, dataset: dict | None = None, split: str | None = None
) -> LightningDataModule:
    """Instantiate ``data_cfg``; with a recorded ``dataset`` ({root, class_names}) use its root and classes
    (the dataset exists already, so no generator); with the recorded ``split`` a stage reads, that split is
    the one ``prepare_data`` checks and validates (the data config's own ``train_split``, composed without
    the classifier's experiment, may name a split the folder does not have: VOC's ``train`` for
    ``train_aug``)."""
    config = OmegaConf.to_container(data_cfg, resolve=True)
    if split is not None:
        config["train_split"] = split
    if dataset is not None:
        config["root"] = dataset["root"]
        config["class_names"] = list(dataset["class_names"])
        if "generator" in config:
            config["generator"] = None
    return instantiate(config, _convert_="all")


def dataset_record(datamodule: LightningDataModule) -> dict:
    return {"root": str(Path(datamodule.root).resolve()), "class_names": list(datamodule.class_names)}


def seeds_and_dataset(cfg: DictConfig) -> tuple[SeedSource, dict, str, VOCSegmentationDataset]:
    """The seeds ``cfg`` names (``seeds``, ``cams_dir``, ``attention_dir``) and the dataset of their split,
    validated before any work.

    The dataset and split are those recorded in ``<cams_dir>/settings.json``; with ``seeds=attention`` and
    no ``cams_dir``, the composed ``data`` config's dataset and its ``train_split`` (the images the
    accumulation holds).
    How the accumulation's maps become seeds is what its index records (no stage setting).

    Returns:
        (seed source, dataset record {root, class_names}, split, dataset of the split).
    """
    cams_dir = Path(cfg.cams_dir) if cfg.get("cams_dir") else None
    attention_dir = Path(cfg.attention_dir) if cfg.get("attention_dir") else None
    seed_source = SeedSource(cfg.seeds, cams_dir, attention_dir)
    seed_source.check_folders()
    if cams_dir is not None:
        cam_settings = read_settings(cams_dir, "rca-cams", "cams_dir")
        recorded = cam_settings.get("seeds", "cams")
        if recorded != "cams" and seed_source.kind != "cams":
            raise InvalidSetting(
                f"{cams_dir / SETTINGS_FILE}: its files are already seeds={recorded} seeds; "
                f"seeds={seed_source.kind} would combine them with attention again (use seeds=cams)"
            )
        record, split = cam_settings["dataset"], cam_settings["split"]
        source = datamodule_for(cfg.data, record, split)
    else:
        source = datamodule_for(cfg.data)
        record, split = dataset_record(source), cfg.data.train_split
    source.prepare_data()
    dataset = source.make_dataset(split, train=False)
    seed_source.validate(dataset.image_ids, dataset.class_names)
    return seed_source, record, split, dataset


def seed_settings(seed_source: SeedSource) -> dict:
    """What a stage records of its (validated) seeds: ``cams_dir``, ``seeds`` (the kind), ``attention_dir``
    and ``seed_normalisation`` (how the accumulation's maps became seeds, as its index records it; None for
    ``seeds=cams``, whose files' own ``settings.json`` records it when they hold attention)."""
    return {
        "cams_dir": str(seed_source.cams_dir.resolve()) if seed_source.cams_dir else None,
        "seeds": seed_source.kind,
        "attention_dir": str(seed_source.attention_dir.resolve()) if seed_source.attention_dir else None,
        "seed_normalisation": seed_source.seed_normalisation,
    }

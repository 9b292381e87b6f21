"""What the CAM / pseudo-mask / evaluation stages share: settings files that tie an output folder to its
dataset and settings, and the datamodule built for a recorded dataset."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import instantiate
from lightning import LightningDataModule
from omegaconf import DictConfig, OmegaConf

from rca_lightning.utils.atomic import write_json_atomically

SETTINGS_FILE = "settings.json"


def read_settings(folder: str | Path, stage: str) -> dict:
    """The ``settings.json`` a stage wrote in ``folder``; FileNotFoundError naming it when absent."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a folder written by {stage}")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def claim_output_folder(folder: Path, settings: dict) -> None:
    """Record ``settings`` in ``folder``, or check that a run resuming there used the same ones."""
    path = folder / SETTINGS_FILE
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = sorted(
            key for key in set(recorded) | set(settings) if recorded.get(key) != settings.get(key)
        )
        if changed:
            raise ValueError(
                f"{path} records other settings for {changed} (e.g. {changed[0]}: "
                f"{recorded.get(changed[0])!r} vs {settings.get(changed[0])!r}); expected the same settings "
                "to resume, or a new output folder"
            )
        return
    write_json_atomically(path, settings)


def datamodule_for(data_cfg: DictConfig, dataset: dict | None = None) -> LightningDataModule:
    """Instantiate ``data_cfg``; with a recorded ``dataset`` ({root, class_names}) use its root and classes
    (the dataset exists already, so no generator)."""
    config = OmegaConf.to_container(data_cfg, resolve=True)
    if dataset is not None:
        config["root"] = dataset["root"]
        config["class_names"] = list(dataset["class_names"])
        if "generator" in config:
            config["generator"] = None
    return instantiate(config, _convert_="all")


def dataset_record(datamodule: LightningDataModule) -> dict:
    return {"root": str(Path(datamodule.root).resolve()), "class_names": list(datamodule.class_names)}

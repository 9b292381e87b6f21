"""Shared fixtures: the real Hydra config, composed and shrunk to a tiny CPU run."""

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import rca_lightning
from rca_lightning.utils.resolvers import register_resolvers
from tests.pipeline_runs import copied_pipeline_run, tiny_pipeline_run  # noqa: F401 (shared fixtures)
from tests.tiny_settings import TINY_DATA_OVERRIDES, TINY_MODEL_OVERRIDES

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist every core has a worker already: a process with several OpenMP threads (this one
    # and the console scripts it starts) would spin against the other workers' and slow everyone down.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CONFIG_DIR = Path(rca_lightning.__file__).parent / "conf"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_train_config(cache_dir, tmp_path):
    """Compose ``train.yaml`` with overrides, on CPU, tiny data, outputs under ``tmp_path``."""
    register_resolvers()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    *TINY_DATA_OVERRIDES,
                    *TINY_MODEL_OVERRIDES,
                    "trainer=cpu",
                    "logger=csv",
                    f"paths.cache_dir={cache_dir}",
                    *overrides,
                ],
            )
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
            cfg.trainer.enable_progress_bar = False
            cfg.trainer.enable_model_summary = False
        return cfg

    return _compose

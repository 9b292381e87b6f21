"""Runs one measured step of ``bench/scale_rehearsal.py`` in this process, then writes this process's peak
GPU memory (MiB; null without CUDA) and the step's own seconds (``prepare``: without Python's start and the
imports; null for ``pipeline``, whose stages keep their own clock) as JSON to ``PEAK_FILE``:
``torch.cuda.max_memory_allocated`` only sees allocations of its own process, so the step runs here rather
than in a grandchild.

    python bench/stage_probe.py pipeline PEAK_FILE [rca-pipeline overrides ...]  # rca-pipeline's main
    python bench/stage_probe.py prepare PEAK_FILE [rca-train overrides ...]      # data.prepare_data()
"""

import json
import shutil
import sys
import time
from pathlib import Path

import torch


def prepare_dataset(overrides: list[str]) -> float:
    """Generate (the built-in dataset) and validate the train and val splits as ``rca-train`` would, its
    validation cache (COCO: and mask cache) removed first: a first run's cost, not a rerun's; the seconds."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import rca_lightning
    from rca_lightning.data import COCODataModule
    from rca_lightning.data.split_validation import CACHE_FOLDER
    from rca_lightning.utils.resolvers import register_resolvers

    register_resolvers()
    config_dir = Path(rca_lightning.__file__).parent / "conf"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data)
    shutil.rmtree(datamodule.validation_cache_dir() / CACHE_FOLDER, ignore_errors=True)
    if isinstance(datamodule, COCODataModule):  # its folder is the masks rendered on first use
        shutil.rmtree(datamodule.validation_cache_dir(), ignore_errors=True)
    started = time.perf_counter()
    datamodule.prepare_data()
    return time.perf_counter() - started


def run_pipeline(overrides: list[str]) -> None:
    """rca-pipeline's main with ``overrides`` (its stages record their own seconds)."""
    from rca_lightning.cli.pipeline import main

    sys.argv = ["rca-pipeline", *overrides]
    try:
        main()
    except SystemExit as exit_:  # a user error: the status is passed on once the peak is written
        if exit_.code:
            raise


def main() -> None:
    step, peak_file, *overrides = sys.argv[1:]
    seconds = None
    try:
        seconds = {"prepare": prepare_dataset, "pipeline": run_pipeline}[step](overrides)
    finally:
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        Path(peak_file).write_text(json.dumps({"peak_gpu_mib": peak, "seconds": seconds}))


if __name__ == "__main__":
    main()

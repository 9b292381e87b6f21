"""One measured step of ``bench/scale_rehearsal.py`` in this process; it writes to ``PEAK_FILE``, as JSON, the
step's own seconds (``prepare``: without the imports; null for ``pipeline``, whose stages keep their own
clock), this process's peak GPU memory (MiB; null without CUDA: ``torch.cuda.max_memory_allocated`` only sees
its own process's allocations, so the step runs here rather than in a grandchild) and the peak resident
memory of this process and of its children (DataLoader and CRF workers), MiB.

``bench/stage_costs.py`` runs each step in a process of its own, forked from a server that imported the stack
once (:data:`STACK`): the step's memory and CUDA context are its own, and Python's start and the imports
(5 s on a CPU, once per stage otherwise) are paid once per rehearsal. By hand:

    python bench/stage_probe.py pipeline PEAK_FILE [rca-pipeline overrides ...]  # rca-pipeline's main
    python bench/stage_probe.py prepare PEAK_FILE [rca-train overrides ...]      # data.prepare_data()
"""

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

# What the probes' server imports before it forks them (everything a step imports).
STACK = ["hydra", "rca_lightning.cli.pipeline", "rca_lightning.data"]


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


STEPS = {"prepare": prepare_dataset, "pipeline": run_pipeline}


def peak_rss_mib() -> float:
    """The peak resident memory of this process or of any child it waited for (``ru_maxrss``: KiB on Linux,
    bytes on macOS)."""
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def measure(step: str, peak_file: str, overrides: list[str]) -> None:
    """Run ``step`` with ``overrides`` and write its figures to ``peak_file`` (also when it fails)."""
    seconds = None
    try:
        seconds = STEPS[step](overrides)
    finally:
        peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        figures = {"peak_gpu_mib": peak_gpu, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}
        Path(peak_file).write_text(json.dumps(figures))


def measure_into_log(step: str, peak_file: str, overrides: list[str], log_file: str) -> None:
    """:func:`measure` with this process's standard output and error written to ``log_file`` (the target of a
    forked probe)."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_file, "w") as log:
        os.dup2(log.fileno(), sys.stdout.fileno())
        os.dup2(log.fileno(), sys.stderr.fileno())
    measure(step, peak_file, overrides)


if __name__ == "__main__":
    measure(sys.argv[1], sys.argv[2], sys.argv[3:])

"""Runs one measured step of ``bench/scale_rehearsal.py`` in this process, then writes this process's peak
GPU memory (MiB; null without CUDA) as JSON to ``PEAK_FILE``: ``torch.cuda.max_memory_allocated`` only sees
allocations of its own process, so the step runs here rather than in a grandchild.

    python bench/stage_probe.py pipeline PEAK_FILE [rca-pipeline overrides ...]  # rca-pipeline's main
    python bench/stage_probe.py prepare PEAK_FILE [rca-train overrides ...]      # data.prepare_data()
"""

import json
import sys
from pathlib import Path

import torch


def prepare_dataset(overrides: list[str]) -> None:
    """Generate (the built-in dataset) and validate the train and val splits as ``rca-train`` would."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import rca_lightning
    from rca_lightning.utils.resolvers import register_resolvers

    register_resolvers()
    config_dir = Path(rca_lightning.__file__).parent / "conf"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    instantiate(cfg.data).prepare_data()


def run_pipeline(overrides: list[str]) -> None:
    from rca_lightning.cli.pipeline import main

    sys.argv = ["rca-pipeline", *overrides]
    try:
        main()
    except SystemExit as exit_:  # a user error: the status is passed on once the peak is written
        if exit_.code:
            raise


def main() -> None:
    step, peak_file, *overrides = sys.argv[1:]
    try:
        {"prepare": prepare_dataset, "pipeline": run_pipeline}[step](overrides)
    finally:
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        Path(peak_file).write_text(json.dumps({"peak_gpu_mib": peak}))


if __name__ == "__main__":
    main()

"""Wall time of a training epoch with 2 CPU DDP processes vs 1 process, and what the bank's sync costs.

Runs `rca-train` twice on the built-in dataset (the default ``experiment=synthetic`` job unless overridden):
``trainer=cpu`` (one process) and ``trainer=ddp_cpu trainer.devices=2`` (two processes, gloo), no
validation, with Lightning's ``SimpleProfiler``. Epoch 0 is a warm-up; the figures are means over the later
epochs. Per rank 0 it reports the epoch's wall time, optimiser steps, time per step, and the share of a
step spent in the memory bank's ``all_gather`` of the step's regions and in the bank update (enqueue),
as timed by the profiler actions of ``MemoryBankCallback``.

    python bench/ddp_scaling.py [--epochs 3] [extra Hydra overrides ...]

Each process gets cores // processes torch threads (Lightning's default for CPU DDP), so on a machine with
few cores two processes do not compute twice as fast; the point is the overhead of the synchronisation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lightning import Callback

from rca_lightning.callbacks.memory_bank import ENQUEUE_ACTION, GATHER_ACTION

EPOCH_ACTION = "run_training_epoch"


class DurationsDumpCallback(Callback):
    """Writes the profiler's recorded durations of this rank to ``<folder>/durations-<rank>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer, pl_module) -> None:
        durations = {action: list(times) for action, times in trainer.profiler.recorded_durations.items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {"durations": durations, "steps_per_epoch": trainer.num_training_batches}
        (self.folder / f"durations-{trainer.global_rank}.json").write_text(json.dumps(payload))


def run(processes: int, epochs: int, overrides: list[str], folder: Path) -> dict:
    trainer = ["trainer=cpu"] if processes == 1 else ["trainer=ddp_cpu", f"trainer.devices={processes}"]
    command = [
        str(Path(sys.executable).with_name("rca-train")),
        *trainer,
        f"trainer.max_epochs={epochs}",
        "+trainer.limit_val_batches=0",
        "optimized_metric=null",
        "trainer.enable_progress_bar=false",
        "+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler",
        "callbacks.model_checkpoint=null",
        "callbacks.cam_images=null",
        f"+callbacks.durations._target_={Path(__file__).stem}.DurationsDumpCallback",
        f"+callbacks.durations.folder={folder}",
        f"hydra.run.dir={folder}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent), "WANDB_MODE": "offline"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"rca-train with {processes} process(es) failed:\n{result.stderr[-3000:]}")
    return json.loads((folder / "durations-0.json").read_text())


def summarise(record: dict) -> dict[str, float]:
    durations = record["durations"]
    epoch_times = durations[EPOCH_ACTION][1:]  # epoch 0 warms up
    steps = record["steps_per_epoch"]
    step_time = statistics.mean(epoch_times) / steps
    per_step = {
        action: sum(durations.get(action, [])) / (steps * len(durations[EPOCH_ACTION]))
        for action in (GATHER_ACTION, ENQUEUE_ACTION)
    }
    return {
        "epoch_s": statistics.mean(epoch_times),
        "steps": steps,
        "step_s": step_time,
        "gather_ms": 1000 * per_step[GATHER_ACTION],
        "enqueue_ms": 1000 * per_step[ENQUEUE_ACTION],
        "share": (per_step[GATHER_ACTION] + per_step[ENQUEUE_ACTION]) / step_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is a warm-up)")
    args, overrides = parser.parse_known_args()
    if args.epochs < 2:
        raise ValueError(f"--epochs={args.epochs}: expected at least 2 (epoch 0 is a warm-up)")
    with tempfile.TemporaryDirectory() as scratch:
        rows = {n: summarise(run(n, args.epochs, overrides, Path(scratch) / f"p{n}")) for n in (1, 2)}
    print(f"CPU cores: {os.cpu_count()}; overrides: {' '.join(overrides) or '(none)'}")
    print("processes | epoch wall (s) | steps/rank | step (s) | gather (ms/step) | enqueue (ms/step) | share")
    for processes, row in rows.items():
        print(
            f"{processes:>9} | {row['epoch_s']:>14.2f} | {row['steps']:>10} | {row['step_s']:>8.3f} | "
            f"{row['gather_ms']:>16.2f} | {row['enqueue_ms']:>17.2f} | {100 * row['share']:>4.1f}%"
        )
    print(f"2 processes / 1 process epoch wall time: {rows[2]['epoch_s'] / rows[1]['epoch_s']:.2f}")


if __name__ == "__main__":
    main()

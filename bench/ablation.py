"""Val CAM mIoU on the built-in dataset: plain CAM, contrast only, aggregation only, full RCA; 3 seeds each.

Each variant is a real ``rca-train`` run (the default ``experiment=synthetic``) launched as a subprocess,
``--jobs`` at a time (each with its share of the CPU threads); the figure is the val CAM mIoU (best
background threshold of the sweep) of the last epoch's weights: no pixel label chooses an epoch. Full RCA
also runs the online attention accumulation (it does not change training), so that
``bench/pipeline_table.py`` can compare the seed sources on the same classifiers. Two trivial
references are scored on the same val split with the same metric: all background, and every pixel of the
image given to its tagged class (ties between several tags go to the lowest class index).

    python bench/ablation.py [--seeds 0 1 2] [--jobs 1] [--out bench/outputs/ablation] [overrides ...]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

VARIANTS = {
    "plain CAM": ["model=cam"],
    "full RCA": ["callbacks=[default,attention_accumulation]"],
    "contrast only": ["model.net.aggregation=false"],
    "aggregation only": ["model.use_contrast=false"],
}


def job_environment(jobs: int) -> dict[str, str]:
    """The environment of one of ``jobs`` parallel runs: offline, and its share of the CPU threads."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run_variant(name: str, seed: int, out: Path, extra: list[str], jobs: int = 1) -> dict:
    run_dir = out / name.replace(" ", "_") / f"seed{seed}"
    summary_path = run_dir / "metrics.json"
    if not summary_path.exists():  # resumable: finished runs are kept
        command = [
            sys.executable,
            "-m",
            "rca_lightning.cli.train",
            *VARIANTS[name],
            f"seed={seed}",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
            *extra,
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=job_environment(jobs))
        print(f"  {name} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return json.loads(summary_path.read_text())


def trivial_references(dataset_root: Path, class_names: list[str]) -> dict[str, float]:
    from rca_lightning.data import VOCSegmentationDataset
    from rca_lightning.metrics import CAMThresholdSweep

    dataset = VOCSegmentationDataset(dataset_root, "val", class_names)
    masks = torch.stack([dataset[i]["mask"] for i in range(len(dataset))])  # (N, H, W)
    labels = torch.as_tensor(dataset.labels)  # (N, C)
    shape = (len(dataset), len(class_names), *masks.shape[-2:])
    references = {}
    for name, scores in {
        "all background": torch.zeros(shape),
        "whole image to its tag": (labels > 0).float()[..., None, None].expand(shape),
    }.items():
        sweep = CAMThresholdSweep(len(class_names), torch.tensor([0.5]))
        sweep.update(scores, masks)
        references[name] = 100 * float(sweep.compute()["best_miou"])
    return references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", type=Path, default=Path("bench/outputs/ablation"))
    args, extra = parser.parse_known_args()

    runs = [(name, seed) for name in VARIANTS for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(lambda run: run_variant(*run, args.out, extra, args.jobs), runs))
    results: dict[str, list[float]] = {}
    for (name, _), summary in zip(runs, summaries, strict=True):
        if summary["checkpoint_selection"] != "last":
            raise ValueError(f"{name}: the run chose its checkpoint by {summary['checkpoint_selection']}")
        results.setdefault(name, []).append(summary["metrics"]["val/cam_mIoU"])

    dataset = json.loads((args.out / "full_RCA" / f"seed{args.seeds[0]}" / "metrics.json").read_text())[
        "dataset"
    ]
    references = trivial_references(Path(dataset["root"]), dataset["class_names"])

    print("\n| variant | val CAM mIoU (%) per seed | mean +- std |")
    print("|---|---|---|")
    for name, values in references.items():
        print(f"| {name} (reference) | {values:.1f} | {values:.1f} |")
    for name, values in results.items():
        per_seed = " / ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {per_seed} | {np.mean(values):.1f} +- {np.std(values):.1f} |")
    (args.out / "table.json").write_text(json.dumps({"references": references, "runs": results}, indent=2))


if __name__ == "__main__":
    main()

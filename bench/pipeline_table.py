"""The whole pipeline on the built-in dataset, plain CAM vs full RCA, 3 seeds: CAM, pseudo-mask and
segmentation mIoU from each run's report.

Each run is a real ``rca-pipeline`` (the default ``experiment=synthetic``, what ``make run`` runs) launched
as a subprocess. A classifier that ``bench/ablation.py`` already trained with the same variant and seed is
reused through ``train_dir`` (the same command line gives the same classifier: runs repeat from their seed).
Finished runs are kept, so the script resumes.

    python bench/pipeline_table.py [--seeds 0 1 2] [--out bench/outputs/pipeline]
        [--ablation bench/outputs/ablation] [extra overrides ...]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = {"plain CAM": ["model=cam"], "full RCA": []}
COLUMNS = {
    "classifier_val_cam_miou": "val CAM (classifier)",
    "cam_miou": "train CAM (ms+flip)",
    "pseudo_label_miou": "pseudo masks",
    "seg_miou": "segmentation (val)",
}


def run_pipeline(name: str, seed: int, out: Path, ablation: Path, extra: list[str]) -> dict:
    folder = name.replace(" ", "_")
    run_dir = out / folder / f"seed{seed}"
    report_path = run_dir / "report.json"
    if not report_path.exists():
        trained = ablation / folder / f"seed{seed}"
        reuse = [f"train_dir={trained.resolve()}"] if (trained / "metrics.json").is_file() else []
        command = [
            str(Path(sys.executable).with_name("rca-pipeline")),
            *VARIANTS[name],
            f"seed={seed}",
            "trainer.enable_progress_bar=false",
            'stages.segmentation=["trainer.enable_progress_bar=false"]',
            f"hydra.run.dir={run_dir}",
            *reuse,
            *extra,
        ]
        started = time.perf_counter()
        subprocess.run(
            command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        note = " (classifier from the ablation run)" if reuse else ""
        print(f"  {name} seed {seed}: {time.perf_counter() - started:.0f} s{note}", flush=True)
    return json.loads(report_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/outputs/pipeline"))
    parser.add_argument("--ablation", type=Path, default=Path("bench/outputs/ablation"))
    args, extra = parser.parse_known_args()

    reports = {
        name: [run_pipeline(name, seed, args.out, args.ablation, extra) for seed in args.seeds]
        for name in VARIANTS
    }
    print(f"\nmIoU (%), {len(args.seeds)} seeds ({' / '.join(map(str, args.seeds))}): per seed; mean +- std")
    print("| variant | " + " | ".join(COLUMNS.values()) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, runs in reports.items():
        cells = []
        for key in COLUMNS:
            values = [run[key] for run in runs]
            per_seed = " / ".join(f"{value:.1f}" for value in values)
            cells.append(f"{per_seed}; {np.mean(values):.1f} +- {np.std(values):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    seconds = {
        name: float(np.mean([sum(run["stage_seconds"].values()) for run in runs]))
        for name, runs in reports.items()
    }
    print("mean wall time of a run's stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    summary = {name: [{key: run[key] for key in COLUMNS} for run in runs] for name, runs in reports.items()}
    (args.out / "table.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

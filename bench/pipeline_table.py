"""The whole pipeline on the built-in dataset, plain CAM vs full RCA (as `make run`; and with each seed
source: multi-scale CAMs, accumulated attention, their max) vs EPS and RCA on EPS (with the built-in
saliency maps), and plain CAM and full RCA refined by IRN's random walk instead of the dense CRF, over
seeds: seed, pseudo-mask and seg mIoU.

The random-walk rows start from their CRF row's classifier and CAMs when that row finished (its classifier
through ``train_dir``, a copy of its ``cams`` and ``cam_eval`` stages, which the pipeline then skips), so the
two rows differ only in the refinement; their boundary network sees the images at ``image_scale`` 2 (the
built-in objects are a few stride-4 cells wide at 1).

Each run is a real ``rca-pipeline`` (the default ``experiment=synthetic``, what ``make run`` runs) launched
as a subprocess, ``--jobs`` at a time. A classifier that ``bench/ablation.py`` already trained with the same
variant and seed is reused through ``train_dir`` (the same command line gives the same classifier: runs
repeat from their seed); the three full-RCA rows share one classifier per seed. Every stage uses its last
epoch's weights (the report's ``uses_pixel_labels_for_selection`` is checked to be false). Finished runs
are kept, so the script resumes.

    python bench/pipeline_table.py [extra overrides ...] [--seeds 0 1 2] [--jobs 1]
        [--variants "plain CAM" "full RCA"] [--out bench/outputs/pipeline] [--ablation bench/outputs/ablation]

(Extra overrides go first: after ``--seeds`` or ``--variants`` they would be read as one more value.)
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ablation import job_environment

RANDOM_WALK = ["refine=random_walk", 'stages.boundary.overrides=["boundary_model.image_scale=2"]']
# name -> (classifier folder of the ablation, overrides)
VARIANTS = {
    "plain CAM": ("plain_CAM", ["model=cam", "seeds=cams"]),
    "full RCA": ("full_RCA_default", []),  # exactly what `make run` runs
    "full RCA, CAM seeds": ("full_RCA", ["callbacks=[default,attention_accumulation]", "seeds=cams"]),
    "full RCA, attention seeds": (
        "full_RCA",
        ["callbacks=[default,attention_accumulation]", "seeds=attention"],
    ),
    "full RCA, max seeds": ("full_RCA", ["callbacks=[default,attention_accumulation]", "seeds=max"]),
    "EPS": ("EPS", ["model=eps"]),
    "RCA on EPS": ("RCA_on_EPS", ["model=rca_eps"]),
    "plain CAM, random walk": ("plain_CAM", ["model=cam", "seeds=cams", *RANDOM_WALK]),
    "full RCA, random walk": ("full_RCA_default", RANDOM_WALK),
}
# A row whose classifier is another row's (the same command line for the classifier).
SAME_CLASSIFIER = {"plain CAM, random walk": "plain CAM", "full RCA, random walk": "full RCA"}
COLUMNS = {
    "classifier_val_cam_miou": "val CAM (classifier)",
    "cam_miou": "train seeds",
    "ir_label_miou": "IR labels (labelled px)",
    "pseudo_label_miou": "pseudo masks",
    "seg_miou": "segmentation (val)",
}


def folder_name(name: str) -> str:
    return name.replace(" ", "_").replace(",", "")


def copy_finished_stages(source: Path, run_dir: Path, stages: tuple[str, ...]) -> None:
    """Copy the finished runs of ``stages`` (their folders, done-file included) from ``source`` into
    ``run_dir`` when ``source`` finished, so that the pipeline in ``run_dir`` skips them."""
    if not (source / "report.json").is_file():
        return
    for stage in stages:
        if not (run_dir / stage).exists():
            shutil.copytree(source / stage, run_dir / stage)


def run_pipeline(name: str, seed: int, out: Path, ablation: Path, extra: list[str], jobs: int) -> dict:
    classifier_folder, overrides = VARIANTS[name]
    run_dir = out / folder_name(name) / f"seed{seed}"
    report_path = run_dir / "report.json"
    if not report_path.exists():
        trained = ablation / classifier_folder / f"seed{seed}"
        if name in SAME_CLASSIFIER:
            trained = out / folder_name(SAME_CLASSIFIER[name]) / f"seed{seed}" / "classifier"
            copy_finished_stages(trained.parent, run_dir, ("cams", "cam_eval"))
        reuse = [f"train_dir={trained.resolve()}"] if (trained / "metrics.json").is_file() else []
        command = [
            sys.executable,
            "-m",
            "rca_lightning.cli.pipeline",
            *overrides,
            f"seed={seed}",
            "trainer.enable_progress_bar=false",
            'stages.segmentation.overrides=["trainer.enable_progress_bar=false"]',
            f"hydra.run.dir={run_dir}",
            *reuse,
            *extra,
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=job_environment(jobs))
        note = f" (classifier of {trained})" if reuse else ""
        print(f"  {name} seed {seed}: {time.perf_counter() - started:.0f} s{note}", flush=True)
    report = json.loads(report_path.read_text())
    if report["uses_pixel_labels_for_selection"]:
        raise ValueError(f"{report_path}: a checkpoint was chosen with pixel labels")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/outputs/pipeline"))
    parser.add_argument("--ablation", type=Path, default=Path("bench/outputs/ablation"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="rows of the table"
    )
    args, extra = parser.parse_known_args()

    runs = [(name, seed) for name in args.variants for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda run: run_pipeline(*run, args.out, args.ablation, extra, args.jobs), runs))
    reports: dict[str, list[dict]] = {}
    for (name, _), report in zip(runs, done, strict=True):
        reports.setdefault(name, []).append(report)
    print(f"\nmIoU (%), {len(args.seeds)} seeds ({' / '.join(map(str, args.seeds))}): per seed; mean +- std")
    print("| variant | " + " | ".join(COLUMNS.values()) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, runs in reports.items():
        cells = []
        for key in COLUMNS:
            values = [run[key] for run in runs if run.get(key) is not None]
            if not values:  # a stage this row does not run (IR labels without the random walk)
                cells.append("-")
                continue
            per_seed = " / ".join(f"{value:.1f}" for value in values)
            cells.append(f"{per_seed}; {np.mean(values):.1f} +- {np.std(values):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    seconds = {
        name: float(np.mean([sum(run["stage_seconds"].values()) for run in runs]))
        for name, runs in reports.items()
    }
    print("mean wall time of a run's stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    per_class = {
        name: [
            {stage: run["per_class_iou"][stage] for stage in ("cam", "pseudo_label", "seg")} for run in runs
        ]
        for name, runs in reports.items()
    }
    summary = {
        "runs": {
            name: [{key: run.get(key) for key in COLUMNS} for run in runs] for name, runs in reports.items()
        },
        "per_class_iou": per_class,
        "stage_seconds": {name: [run["stage_seconds"] for run in runs] for name, runs in reports.items()},
    }
    (args.out / "table.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

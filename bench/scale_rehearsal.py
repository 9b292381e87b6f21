"""What each stage of an experiment's pipeline costs per item, measured at two sizes, and what the full
dataset and schedule will cost on this machine.

Each stage runs as it runs in ``rca-pipeline`` (its own code path, the pipeline's composition), one stage per
process: the pipeline is launched once per stage with the later stages disabled (the earlier ones are
finished, so skipped), in a process forked from one that imported the stack once, which gives each stage its
own peak resident memory and peak GPU memory (``bench/stage_probe.py``); its seconds are the pipeline's own
clock (``pipeline_state.json``, ``report.json``'s ``stage_seconds``). The data preparation (generating the
built-in dataset, validating the splits) is a row of its own. An item is an image of the split the stage reads
(train for CAMs, their scores, pseudo masks, boundary maps; train + val for the data preparation) or an
optimiser step for the trainers (classifier, segmentation), which run ``--trainer-epochs`` epochs at both
sizes, their validation in proportion (the val split is scaled with the train split). From the two sizes:
``seconds = fixed + per item x items`` (the same for disk bytes, which grow with images: a trainer's too),
projected to the full dataset and the preset's schedule (epochs x steps per epoch, or its max_steps). A
trainer's cost per epoch apart from its steps (validation set-up, k-means, checkpoints) comes, on the built-in
dataset, from a third run, the smaller size for twice the epochs: ``fixed + per epoch x epochs + per step x
steps`` (``PER_EPOCH`` says why not at real sizes); that run measures only the trainers, each in a process of
its own as above (the stages between them run in the classifier's: 2 processes instead of 7). The run folders
are kept, so a rerun reuses them.

    python bench/scale_rehearsal.py --experiment NAME --json OUT.json [--data-root DIR] [--images N]
    python bench/scale_rehearsal.py --calibrate --json OUT.json   # the built-in pipeline vs a real `make run`
    python bench/scale_rehearsal.py --smoke --json OUT.json       # tiny sizes, under a minute on 2 cores

``--experiment synthetic`` is the built-in dataset (``make run``). A preset on real-size data
(``voc_rca_vgg16``, ``coco_rca_resnet101``, ...) runs on VOC- or COCO-shaped sets of each size written by the
real-size generator (``generate_voc_like`` / ``generate_coco_like``) into ``--data-root DIR`` (default:
``<out>/data``), ``DIR/train<N>_val<V>/``, kept for reruns; the generation is not measured (a user downloads).
Without ImageNet weights (offline; they change what is learnt, not what it costs). Extra ``rca-pipeline``
overrides follow the options (``refine=random_walk``). The report (figures) is a row of its own, a cost per
run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import rca_lightning
from rca_lightning.data import generate_coco_like, generate_voc_like
from rca_lightning.data.split_validation import CACHE_FOLDER
from rca_lightning.pipeline import Pipeline
from rca_lightning.utils.resolvers import register_resolvers
from stage_costs import StepCost, check_rows, disk_usage, per_epoch_fit, run_probe, stage_row

CONFIG_DIR = Path(rca_lightning.__file__).parent / "conf"
TRAINERS = ("classifier", "segmentation")
# PER_EPOCH: a trainer's cost per epoch apart from its steps' (validation set-up, the bank's k-means,
# checkpoints) is measured on the built-in dataset (the smaller size again, twice the epochs), whose epochs
# are 15-30 steps: there it is a tenth of the classifier's time. A real dataset's epoch is 1,000-10,000 steps
# of seconds each; the per-epoch cost (seconds: a full bank's k-means takes 1.8 s at 20 x 500 x 512 and
# 4.5 s at 80 x 500 x 256 on 2 CPU cores) stays in the fixed cost, and the rehearsal takes a third less.
# The real datasets' train / val images (VOC: train_aug / val; COCO 2014: train / val).
FULL_SIZES = {"voc": (10_582, 1_449), "coco": (82_783, 40_504)}
SMOKE_MODEL = [
    "model.net.head_width=16",
    "model.net.projection_dim=16",
    "model.net.attention_dim=16",
    "model.memory_bank.queue_length=32",
    "model.memory_bank.num_prototypes=3",
    "data.generator.image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
]
# A preset's ImageNet weights change what it learns, not what it costs: rehearsed offline, without them.
NO_WEIGHTS = ["model.net.backbone.pretrained=false"]
NO_WEIGHTS_STAGES = {"segmentation": ["seg_model.net.backbone.pretrained=false"]}
SMOKE_STAGES = {
    "cams": ["scales=[1.0]", "flip=false"],
    "cam_eval": ["progress=false"],
    "pseudo_masks": ["progress=false", "num_workers=0"],
    "pseudo_mask_eval": ["progress=false"],
    "segmentation": ["data.batch_size=4", "crop_size=32", "seg_model.tta_scales=[1.0]"],
}


@dataclass
class Rehearsal:
    """One experiment's rehearsal: its overrides, the two train sizes (empty: the smallest that holds a
    batch of every trainer, at least 8, and twice that) and the trainers' shortened schedule."""

    experiment: str
    sizes: tuple[int, int] | tuple[()]
    trainer_epochs: int
    data_root: Path | None = None
    overrides: list[str] = field(default_factory=list)
    stage_overrides: dict[str, list[str]] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return self.data_root is None

    def full_size(self, configs: dict[str, DictConfig]) -> tuple[int, int]:
        data = configs["classifier"].data
        if self.synthetic:
            return int(data.generator.num_train), int(data.generator.num_val)
        return FULL_SIZES[dataset_kind(configs)]

    def data_overrides(self, num_train: int, full: tuple[int, int], kind: str) -> list[str]:
        """The dataset of ``num_train`` train images (the val split in proportion to the full sizes); a
        ``kind`` (voc, coco) set is generated unless it is complete already."""
        num_val = max(1, round(num_train * full[1] / full[0]))
        if self.synthetic:
            return [f"data.generator.num_train={num_train}", f"data.generator.num_val={num_val}"]
        generate = {"voc": generate_voc_like, "coco": generate_coco_like}[kind]
        dataset = generate(self.data_root / f"train{num_train}_val{num_val}", num_train, num_val)
        return [f"data.root={dataset.root.resolve()}", f"data.saliency_dir={dataset.saliency_dir.resolve()}"]

    def pipeline_overrides(self, data: list[str], epochs: int | None) -> list[str]:
        """The pipeline's command line: the experiment, ``data``, and the trainers' rehearsal schedule of
        ``epochs`` (None: the preset's own)."""
        stages = {name: list(values) for name, values in self.stage_overrides.items()}
        schedule = []
        if epochs is not None:
            schedule = [f"trainer.max_epochs={epochs}"]
            seg_schedule = [f"trainer.max_epochs={epochs}", "++trainer.max_steps=-1"]
            stages["segmentation"] = [*stages.get("segmentation", []), *seg_schedule]
        stage_lists = [f"stages.{name}.overrides={json.dumps(values)}" for name, values in stages.items()]
        return [f"experiment={self.experiment}", *self.overrides, *data, *schedule, *stage_lists]


def dataset_kind(configs: dict[str, DictConfig]) -> str:
    """voc or coco: the real dataset the classifier's data config reads."""
    return "coco" if "COCO" in configs["classifier"].data._target_ else "voc"


def stage_configs(overrides: list[str]) -> dict[str, DictConfig]:
    """The composed config of every stage the pipeline runs with ``overrides``, in order (what
    ``print_config=true`` shows)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides, return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        run_dir = Path(tempfile.gettempdir()) / "scale_rehearsal_composition"
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            del cfg["hydra"]
        return Pipeline(cfg, overrides, choices, run_dir).plan().configs()


def schedule(cfg: DictConfig, num_train: int) -> tuple[int, float]:
    """The optimiser steps and epochs of a trainer stage's schedule on ``num_train`` images (the train loader
    drops its last partial batch: ``VOCDataModule.train_dataloader``); a ``max_steps`` schedule's epochs
    are its steps over those of one epoch."""
    batches = max(1, num_train // int(cfg.data.batch_size))
    limit = cfg.trainer.get("limit_train_batches") or 1.0
    batches = min(batches, int(limit)) if isinstance(limit, int) else max(1, int(batches * limit))
    if cfg.trainer.get("max_steps", -1) > 0:
        return int(cfg.trainer.max_steps), cfg.trainer.max_steps / batches
    return int(cfg.trainer.max_epochs) * batches, float(cfg.trainer.max_epochs)


def disk_items(configs: dict[str, DictConfig], num_train: int, num_val: int) -> dict[str, float]:
    """What a stage's bytes grow with: its split's images (the trainers' too: an attention store, not
    their steps), train + val images of the data preparation, nothing for the report."""
    return {
        "data_preparation": float(num_train + num_val),
        **dict.fromkeys(configs, float(num_train)),
        "report": 1.0,
    }


def stage_items(configs: dict[str, DictConfig], num_train: int, num_val: int) -> dict[str, float]:
    """Items per stage: optimiser steps of the trainers, train images of the others, train + val images of
    the data preparation."""
    items = {name: float(num_train) for name in configs}
    for name in TRAINERS:
        items[name] = float(schedule(configs[name], num_train)[0])
    return {"data_preparation": float(num_train + num_val), **items, "report": 1.0}


def measure_size(
    rehearsal: Rehearsal,
    num_train: int,
    full: tuple[int, int],
    kind: str,
    epochs: int,
    folder: Path,
    measured: tuple[str, ...] | None = None,
) -> dict:
    """Run the pipeline stage by stage on ``num_train`` train images, the trainers for ``epochs``, into
    ``folder``; the costs per stage (reused when ``folder/costs.json`` exists). With ``measured``, only those
    stages (of the pipeline's) are measured, each the first stage of its process as before; the stages in
    between run unmeasured after the measured one before them, in its process, on the data of a size
    measured already (prepared here, unmeasured, where it is missing)."""
    record = folder / "costs.json"
    if record.is_file():
        return {name: StepCost(**cost) for name, cost in json.loads(record.read_text()).items()}
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished measurement starts again
    folder.mkdir(parents=True)
    data = rehearsal.data_overrides(num_train, full, kind)
    overrides = rehearsal.pipeline_overrides(data, epochs)
    configs = stage_configs(overrides)
    num_val = max(1, round(num_train * full[1] / full[0]))
    items, disk = stage_items(configs, num_train, num_val), disk_items(configs, num_train, num_val)
    prepare = [f"experiment={rehearsal.experiment}", *rehearsal.overrides, *data]
    costs = {}
    if measured is None:
        costs["data_preparation"] = run_probe("prepare", prepare, folder / "data_preparation.log")
    elif not (data_root_of(configs) / CACHE_FOLDER).is_dir():  # generated and validated before any stage
        run_probe("prepare", prepare, folder / "data_preparation.log")
    run_dir = folder / "run"
    names = list(configs)
    launches: list[list[str]] = [[]]  # the stages of each process: a measured stage starts one
    for name in names:
        if measured is None or name in measured:
            launches.append([name])
        else:
            launches[-1].append(name)
    for launch in filter(None, launches):
        name, end = launch[0], names.index(launch[-1]) + 1
        later = [f"stages.{later}.enabled=false" for later in names[end:]]
        # Each call enables more stages (``stages`` may differ when a pipeline resumes).
        command = [*overrides, *later, f"hydra.run.dir={run_dir}"]
        cost = run_probe("pipeline", command, folder / f"{name}.log")
        if len(launch) > 1:  # its process ran unmeasured stages too: only the stage's own clock is its
            cost = StepCost(items=0)
        if measured is None or name in measured:
            state = json.loads((run_dir / "pipeline_state.json").read_text())
            cost.seconds = state["stages"][name]["seconds"]
            costs[name] = cost
    if measured is None:
        # The report of the last call: its own seconds, in the process of the last stage (its peak is theirs).
        seconds = json.loads((run_dir / "report.json").read_text())["stage_seconds"]["report"]
        costs["report"] = StepCost(items=0, seconds=seconds, peak_rss_mib=costs[names[-1]].peak_rss_mib)
    for name, cost in costs.items():
        cost.items, cost.disk_items = items[name], disk[name]
        stage_folder = {"data_preparation": data_root_of(configs), "report": run_dir / "figures"}
        cost.disk_bytes, cost.artefact_bytes = disk_usage(stage_folder.get(name, run_dir / name))
    record.write_text(json.dumps({name: vars(cost) for name, cost in costs.items()}, indent=1))
    return costs


def data_root_of(configs: dict[str, DictConfig]) -> Path:
    return Path(configs["classifier"].data.root)


def use_rehearsal_environment(out: Path) -> None:
    """Offline, and the built-in dataset cached under ``out`` (generated by the data preparation): for
    this process's compositions and the probes' processes."""
    os.environ.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", NO_ALBUMENTATIONS_UPDATE="1")
    os.environ["RCA_CACHE_DIR"] = str((out / "cache").resolve())


def rehearse(rehearsal: Rehearsal, out: Path) -> dict:
    """Measure both sizes and project every stage to the full dataset and schedule."""
    full_configs = stage_configs(rehearsal.pipeline_overrides([], None))
    full = rehearsal.full_size(full_configs)
    full_items = stage_items(full_configs, *full)
    full_disk_items = disk_items(full_configs, *full)
    kind = dataset_kind(full_configs)
    if not rehearsal.sizes:  # one batch of every trainer at least (a loader drops a partial batch)
        num_small = max(8, *(int(full_configs[name].data.batch_size) for name in TRAINERS))
        rehearsal.sizes = (num_small, 2 * num_small)
    epochs, (num_small, num_large) = rehearsal.trainer_epochs, rehearsal.sizes
    small = measure_size(rehearsal, num_small, full, kind, epochs, out / f"train{num_small}")
    large = measure_size(rehearsal, num_large, full, kind, epochs, out / f"train{num_large}")
    longer = None
    if rehearsal.synthetic:  # see PER_EPOCH
        folder = out / f"train{num_small}_epochs{2 * epochs}"
        longer = measure_size(rehearsal, num_small, full, kind, 2 * epochs, folder, measured=TRAINERS)
    rows = []
    for name in small:
        row = stage_row(
            name, item_kind(name), small[name], large[name], full_items[name], full_disk_items[name]
        )
        if name in TRAINERS and longer is not None:
            full_epochs = schedule(full_configs[name], full[0])[1]
            row.update(per_epoch_fit(row, small[name], longer[name], epochs, full_epochs))
        rows.append(row)
    check_rows(rows)
    return {
        "device": device_name(),
        "experiment": rehearsal.experiment,
        "sizes": {"train_images": list(rehearsal.sizes), "full": list(full)},
        "trainer_epochs": rehearsal.trainer_epochs,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "stages": rows,
    }


def item_kind(name: str) -> str:
    kinds = {
        "data_preparation": "image (train + val)",
        "report": "run",
        **dict.fromkeys(TRAINERS, "optimiser step"),
    }
    return kinds.get(name, "image (train)")


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores)"


def calibrate(rehearsal: Rehearsal, out: Path) -> dict:
    """The projection of the built-in pipeline against one real full run (``make run``'s command line, data
    prepared first, as its row): per stage, projected / actual seconds."""
    projection = rehearse(rehearsal, out)
    full = out / "full"
    if not (full / "run" / "report.json").is_file():
        shutil.rmtree(full, ignore_errors=True)
        full.mkdir(parents=True)
        prepare = run_probe("prepare", [], full / "data_preparation.log")
        run_probe("pipeline", [f"hydra.run.dir={full / 'run'}"], full / "pipeline.log")
        (full / "data_preparation.json").write_text(json.dumps({"seconds": prepare.seconds}))
    actual = json.loads((full / "run" / "report.json").read_text())["stage_seconds"]
    actual["data_preparation"] = json.loads((full / "data_preparation.json").read_text())["seconds"]
    for row in projection["stages"]:
        row["actual_seconds"] = actual[row["name"]]
        row["ratio"] = row["projected_seconds"] / row["actual_seconds"]
    projection["load_average_after_full_run"] = os.getloadavg()
    return projection


def print_table(result: dict, calibration: bool) -> None:
    columns = [
        "stage",
        "item",
        "s / item",
        "growth",
        "peak RSS MiB",
        "disk B / image",
        "projected h",
        "disk GB",
    ]
    if calibration:
        columns[-2:] = ["projected s", "actual s", "ratio"]
    print(f"\n{result['experiment']} on {result['device']}, train sizes {result['sizes']}")
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for row in result["stages"]:
        cells = [row["name"], row["item"], f"{row['seconds_per_item']:.4g}", f"{row['growth']:.2f}"]
        cells += [f"{row['peak_rss_mib']:.0f}", f"{row['disk_bytes_per_item']:.4g}"]
        if calibration:
            cells += [
                f"{row['projected_seconds']:.1f}",
                f"{row['actual_seconds']:.1f}",
                f"{row['ratio']:.2f}",
            ]
        else:
            cells += [f"{row['projected_seconds'] / 3600:.3g}", f"{row['projected_disk_bytes'] / 1e9:.3g}"]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--experiment", default="synthetic", help="an experiment/ preset")
    mode.add_argument("--calibrate", action="store_true", help="the built-in pipeline vs a real make run")
    mode.add_argument("--smoke", action="store_true", help="a tiny size of the built-in pipeline")
    parser.add_argument("--json", type=Path, required=True, help="where the table is written")
    parser.add_argument("--data-root", type=Path, help="a preset's generated sets (default: <out>/data)")
    parser.add_argument(
        "--images",
        type=int,
        help="train images of the smaller size, N (2N the larger); "
        "default: 60 on the built-in dataset, on real-size data 8 or the largest trainer batch",
    )
    parser.add_argument("--trainer-epochs", type=int, default=2, help="the trainers' epochs at both sizes")
    parser.add_argument("--out", type=Path, default=Path("bench/outputs/scale_rehearsal"))
    parser.add_argument("overrides", nargs="*", help="extra rca-pipeline overrides, e.g. refine=random_walk")
    args = parser.parse_args()
    experiment = "synthetic" if args.calibrate or args.smoke else args.experiment
    images = args.images or (8 if args.smoke else 60 if experiment == "synthetic" else None)
    sizes = (images, 2 * images) if images else ()
    rehearsal = Rehearsal(experiment, sizes, 1 if args.smoke else args.trainer_epochs)
    out = args.out / ("smoke" if args.smoke else "calibration" if args.calibrate else experiment)
    if experiment != "synthetic":
        rehearsal.data_root = args.data_root or out / "data"
    if args.smoke:
        rehearsal.overrides, rehearsal.stage_overrides = list(SMOKE_MODEL), dict(SMOKE_STAGES)
    elif experiment != "synthetic":
        rehearsal.overrides, rehearsal.stage_overrides = list(NO_WEIGHTS), dict(NO_WEIGHTS_STAGES)
    rehearsal.overrides += args.overrides
    use_rehearsal_environment(out)
    result = calibrate(rehearsal, out) if args.calibrate else rehearse(rehearsal, out)
    print_table(result, args.calibrate)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

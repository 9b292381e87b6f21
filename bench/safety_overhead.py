"""What the checks of issue 24 cost a `make run`: each check timed on make-run's own config and data, times
how often a `make run` performs it.

Timed (median of ``--repeats``): taking and releasing a folder lock; recording and comparing a run's
fingerprint (the pipeline's composed config); checking the classifier run's config on its resolved tree
(the allow-list); reading and checking a split list of ids; checking that a per-image file name stays inside
its folder; reading a state file through the checked JSON reader. The counts are those of one `make run`
(7 stages, 240 train and 80 val images; stated in the table), so the total is the seconds the checks add.

    python bench/safety_overhead.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rca_lightning.data.voc_layout import read_split_ids
from rca_lightning.utils.atomic import path_inside, write_json_atomically
from rca_lightning.utils.folder_lock import owned_folder
from rca_lightning.utils.resolvers import register_resolvers
from rca_lightning.utils.run_fingerprint import claim_run_settings
from rca_lightning.utils.safe_loading import load_run_config
from rca_lightning.utils.state_files import read_json_object

CONFIG_DIR = Path(__file__).resolve().parent.parent / "src" / "rca_lightning" / "conf"
TRAIN_IMAGES, VAL_IMAGES, STAGES = 240, 80, 7
# How often one `make run` performs each check (what the stages do, counted from their code):
COUNTS = {
    # the pipeline's run folder, and the output folders of cams, pseudo masks and each console-level stage
    "folder lock": STAGES + 1,
    # the pipeline, the classifier and the segmentation network record theirs
    "fingerprint (record + compare)": 3,
    # rca-cams reads the classifier's config
    "allow-list on the resolved model config": 1,
    # every datamodule setup reads its splits (train, val) in 5 stages
    "split list read and checked (240 ids)": 10,
    # CAM files written and read twice (eval, pseudo), masks written and read twice (eval, segmentation)
    "per-image target inside its folder": 5 * TRAIN_IMAGES,
    # settings.json / eval.json / metrics.json / cams.json read by the stages and the report
    "state file read (checked JSON)": 20,
}


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        pipeline_cfg = compose("pipeline")
        train_cfg = compose("train")
    folder = Path(tempfile.mkdtemp(prefix="safety_overhead_"))
    run_config = folder / "config.yaml"
    OmegaConf.save(train_cfg, run_config)
    split_file = folder / "train.txt"
    split_file.write_text("".join(f"{index:06d}\n" for index in range(TRAIN_IMAGES)))
    state_file = folder / "settings.json"
    write_json_atomically(state_file, {"split": "train", "dataset": {"root": str(folder), "class_names": []}})

    def lock_once() -> None:
        with owned_folder(folder / "locked", "bench"):
            pass

    def fingerprint_once() -> None:
        (folder / "fingerprinted" / "fingerprint.json").unlink(missing_ok=True)
        (folder / "fingerprinted").mkdir(exist_ok=True)
        claim_run_settings(folder / "fingerprinted", pipeline_cfg)  # records
        claim_run_settings(folder / "fingerprinted", pipeline_cfg)  # compares

    actions = {
        "folder lock": lock_once,
        "fingerprint (record + compare)": fingerprint_once,
        "allow-list on the resolved model config": lambda: load_run_config(run_config, "model"),
        "split list read and checked (240 ids)": lambda: read_split_ids(split_file),
        "per-image target inside its folder": lambda: path_inside(folder, "000123.npz"),
        "state file read (checked JSON)": lambda: read_json_object(state_file, "settings"),
    }
    total = 0.0
    print(f"{'check':<44} {'ms each':>9} {'per make run':>13} {'seconds':>9}")
    for name, action in actions.items():
        seconds = median_seconds(action, args.repeats)
        added = seconds * COUNTS[name]
        total += added
        print(f"{name:<44} {1000 * seconds:>9.3f} {COUNTS[name]:>13d} {added:>9.3f}")
    print(f"{'total added to one make run':<68} {total:>9.3f}")


if __name__ == "__main__":
    main()

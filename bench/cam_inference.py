"""CAM inference throughput and peak memory for 100 vs 1,000 images, and dense-CRF throughput.

Each image count runs in a fresh process (so its peak resident memory, ``ru_maxrss``, is its own): a
synthetic split of that many 64 px images, an untrained tiny RCA classifier saved as a training run, then
``rca-cams``' function with the default 4 scales + flip. The peak must not grow with the count: the writer
stores each image as it is computed and nothing is kept. Then pseudo masks (background power + CRF) of the
100-image split over a pool of every core, and one CRF at 320 x 320 with 21 labels on one core.

    python bench/cam_inference.py [--counts 100 1000] [--device cpu]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(count: int, workdir: Path, accelerator: str) -> dict:
    """One image count in this process: CAMs (and, for the smallest count, pseudo masks)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from tests.conftest import TINY_MODEL_OVERRIDES
    from tests.stage_helpers import compose_config

    from rca_lightning.tasks.cams import cams

    run_dir = workdir / f"train_{count}"
    data = [
        f"data.generator.num_train={count}",
        "data.generator.num_val=1",
        "data.generator.image_size=64",
        "data.num_workers=0",
        "data.class_names=[disc,square,triangle]",
        f"paths.cache_dir={workdir / 'cache'}",
    ]
    cfg = compose_config("train", run_dir, [*data, *TINY_MODEL_OVERRIDES, "trainer=cpu"])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    model = instantiate(cfg.model)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    dataset = {"root": str(datamodule.root), "class_names": list(cfg.data.class_names)}
    (run_dir / "metrics.json").write_text(
        json.dumps({"checkpoint": str(checkpoint), "checkpoint_selection": "last", "dataset": dataset})
    )
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    del model, datamodule

    cams_cfg = compose_config(
        "cams", workdir / f"cams_{count}", [f"train_dir={run_dir}", f"trainer.accelerator={accelerator}"]
    )
    rss_before = current_rss_mib()
    peak_before = peak_rss_mib()
    metrics, _ = cams(cams_cfg)
    result = {
        "count": count,
        "cam_images_per_second": metrics["images_per_second"],
        "rss_before_mib": rss_before,
        "peak_rss_before_mib": peak_before,
        "peak_rss_mib": peak_rss_mib(),
    }
    if count == min(args.counts):
        from rca_lightning.pseudo.pseudo_mask_writer import PseudoMaskRule, write_pseudo_masks
        from rca_lightning.tasks.stage_settings import datamodule_for

        split = datamodule_for(cams_cfg.data, dataset).make_dataset("train")
        items = [(i, str(split.image_path(i))) for i in split.image_ids]
        rule = PseudoMaskRule(Path(cams_cfg.cams_dir), workdir / "masks")
        start = time.perf_counter()
        write_pseudo_masks(items, rule, num_workers=os.cpu_count(), progress=False)
        result["crf_64px_images_per_second_all_cores"] = len(items) / (time.perf_counter() - start)
    return result


def crf_320() -> float:
    """Seconds of one CRF (10 iterations) at 320 x 320 with 21 labels on one core."""
    from rca_lightning.pseudo.crf import DenseCRF

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)
    scores = rng.random((21, 320, 320)).astype(np.float32)
    crf = DenseCRF()
    crf(image, scores)
    start = time.perf_counter()
    for _ in range(3):
        crf(image, scores)
    return (time.perf_counter() - start) / 3


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--device", default="cpu", help="Lightning accelerator of the CAM inference")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.workdir, args.device)))
        sys.exit(0)

    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for count in args.counts:
            command = [
                sys.executable,
                __file__,
                "--worker",
                str(count),
                "--workdir",
                tmp,
                "--device",
                args.device,
            ]
            command += ["--counts", *map(str, args.counts)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"worker for {count} images failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"CAM inference (4 scales + flip, 64 px images, untrained tiny RCA, {args.device}):")
    print(
        f"{'images':>8} {'images/s':>10} {'RSS before (MiB)':>17} {'peak RSS (MiB)':>15} {'peak growth':>12}"
    )
    for r in results:
        growth = r["peak_rss_mib"] - r["peak_rss_before_mib"]
        print(
            f"{r['count']:>8} {r['cam_images_per_second']:>10.1f} {r['rss_before_mib']:>17.0f} "
            f"{r['peak_rss_mib']:>15.0f} {growth:>11.0f}M"
        )
    if len(results) > 1:
        delta = results[-1]["peak_rss_mib"] - results[0]["peak_rss_mib"]
        print(f"peak RSS, {results[-1]['count']} vs {results[0]['count']} images: {delta:+.0f} MiB")
    crf_rate = next(
        r["crf_64px_images_per_second_all_cores"]
        for r in results
        if "crf_64px_images_per_second_all_cores" in r
    )
    print(f"Pseudo masks (CRF, 64 px, {os.cpu_count()} processes): {crf_rate:.1f} images/s")
    seconds = crf_320()
    print(
        f"Dense CRF 320 x 320, 21 labels, 10 iterations, 1 core: {seconds:.2f} s/image "
        f"({1 / seconds:.2f} images/s)"
    )

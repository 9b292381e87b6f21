"""Seconds per image and peak memory of the random walk (``rca_lightning.pseudo.random_walk``) at 128, 320 and
512 px images (boundary maps at stride 4), against the (HW/16)^2 floats IRN's dense transition matrix needs.

Each size runs in a fresh process so that its peak resident memory (CPU) or peak allocated memory (CUDA) is
its own. Seeds: 3 classes; boundary: random; IRN's inference settings (radius 5, beta 10, 2^8 steps).

    python bench/random_walk.py [--sizes 128 320 512] [--device cpu|cuda] [--threads 2] [--repeats 3]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from rca_lightning.pseudo.random_walk import random_walk
from rca_lightning.utils.pixel_paths import stride4_size


def measure(size: int, device: str, repeats: int) -> dict:
    """One size in this process: seconds per image (mean of ``repeats`` after a warm-up) and peak memory."""
    generator = torch.Generator().manual_seed(0)
    height, width = stride4_size((size, size))
    boundary = torch.rand(height, width, generator=generator).to(device)
    seeds = torch.rand(3, height, width, generator=generator).to(device)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    random_walk(seeds, boundary)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        random_walk(seeds, boundary)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    return {
        "size": size,
        "stride4": [height, width],
        "seconds_per_image": (time.perf_counter() - start) / repeats,
        "peak_memory_mib": peak / 2**20,
        "dense_transition_mib": (height * width) ** 2 * 4 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 320, 512])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(measure(args.one, args.device, args.repeats)))
        return
    print(f"random walk, {args.device}, {args.threads} threads (radius 5, beta 10, 256 steps, 3 classes)")
    print(f"{'image':>7} {'stride 4':>10} {'s / image':>10} {'peak MiB':>9} {'dense T MiB':>12}")
    for size in args.sizes:
        command = [sys.executable, __file__, "--one", str(size), "--device", args.device]
        command += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        row = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        stride4 = "x".join(map(str, row["stride4"]))
        print(
            f"{size:>5}px {stride4:>10} {row['seconds_per_image']:>10.3f} {row['peak_memory_mib']:>9.1f} "
            f"{row['dense_transition_mib']:>12.1f}"
        )


if __name__ == "__main__":
    main()

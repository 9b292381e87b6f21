"""The dense-CRF pseudo-mask stage (``rca-pseudo``) in images/s: one process, the same process with a pool
of 2 CRF workers, and 2 processes under torchrun (each taking its share of the images, one CRF worker each).

The images are the built-in generator's at ``--image-size`` (VOC-sized by default) with CAMs made from their
masks (blurred), so only the CRF stage is timed. Each launch writes into a fresh folder.

    python bench/sharded_stages.py [--images 64] [--image-size 320]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.stage_helpers import make_dataset_with_cams  # noqa: E402

LAUNCHES = {
    "1 process, in-process CRF": (1, 0),
    "1 process, pool of 2 CRF workers": (1, 2),
    "2 processes (torchrun), 1 CRF worker each": (2, 1),
}


def images_per_second(cams_dir: Path, run_dir: Path, processes: int, workers: int) -> float:
    module = ["-m", "rca_lightning.cli.pseudo"]
    if processes > 1:
        module = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *module]
    overrides = [
        f"cams_dir={cams_dir}",
        f"num_workers={workers}",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *module, *overrides], check=True, capture_output=True, env=environment)
    return json.loads((run_dir / "pseudo.json").read_text())["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=320)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "cams").mkdir()
        make_dataset_with_cams(base / "voc", base / "cams", args.images, args.image_size)
        print(f"dense-CRF pseudo masks of {args.images} images of {args.image_size} px (CRF: 10 iterations):")
        for index, (name, (processes, workers)) in enumerate(LAUNCHES.items()):
            speed = images_per_second(base / "cams", base / f"run{index}", processes, workers)
            print(f"  {name:45s} {speed:6.2f} images/s")


if __name__ == "__main__":
    main()

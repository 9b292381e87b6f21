"""``python -m rca_lightning.cli.generate_real_size {voc,coco} ROOT``: write a real-size generated set.

``voc`` writes the VOC-shaped set (:mod:`rca_lightning.data.synthetic_voc_like`: 20 VOC names, about
500 x 375, ``train_aug`` / ``val``), ``coco`` the COCO-shaped one
(:mod:`rca_lightning.data.synthetic_coco_like`: 80 COCO categories, about 640 x 480,
``instances_{train,val}2014.json``), both with saliency maps, in the layouts ``data=voc`` and ``data=coco``
read. The defaults are the real datasets' sizes (10,582 / 1,449 and 82,783 / 40,504 images). A set that is
complete under ROOT is kept; an interrupted call resumes. Prints the images per second and the bytes per
image on disk. A user error (ROOT holds something else, a count below 1) ends in one line
``generate_real_size: error: <what>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rca_lightning.data.synthetic_coco_like import COCOLikeGenerator
from rca_lightning.data.synthetic_voc_like import VOCLikeGenerator
from rca_lightning.utils.errors import UserError

PROG = "generate_real_size"
USER_ERROR_STATUS = 2
GENERATORS = {"voc": VOCLikeGenerator, "coco": COCOLikeGenerator}


def disk_bytes(root: Path) -> int:
    """Bytes of every file under ``root``."""
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit status (0, or 2 for a user error, printed as one line)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(GENERATORS), help="the dataset's shape")
    parser.add_argument("root", type=Path, help="folder to write (data.root): missing, empty or generated")
    parser.add_argument("--train", type=int, default=None, help="train images (default: the real dataset's)")
    parser.add_argument("--val", type=int, default=None, help="val images (default: the real dataset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every CPU)")
    args = parser.parse_args(argv)

    counts = {
        key: value for key, value in (("num_train", args.train), ("num_val", args.val)) if value is not None
    }
    began = time.perf_counter()
    try:
        generator = GENERATORS[args.kind](seed=args.seed, **counts)
        generated = generator.generate(args.root, workers=args.workers)
    except UserError as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return USER_ERROR_STATUS
    seconds = time.perf_counter() - began
    images = generator.num_train + generator.num_val
    print(
        f"{generated.root}: {images} images ({generator.num_train} {generated.train_split}, "
        f"{generator.num_val} {generated.val_split}) in {seconds:.1f} s ({images / seconds:.1f} images/s), "
        f"{disk_bytes(generated.root) / images:,.0f} bytes per image on disk; saliency maps in "
        f"{generated.saliency_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

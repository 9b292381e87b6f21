"""``rca-prepare-voc ROOT``: check a VOC 2012 + SBD folder, write class-label files.

Writes, from the XML annotations of every listed split (labels of one image are the same in every split):

- ``ROOT/cls_labels.npy``: a pickled dict ``{image id (str): (20,) float32 multi-hot}`` in VOC class
  order, as IRN-style tools load with ``np.load(path, allow_pickle=True).item()``;
- ``ROOT/cls_labels.txt``: one line per image, ``<id> <0-based class indices...>`` (the ``train_cls.txt``
  style of OAA / the RCA release).

``--split-list FILE --split-name train_aug`` first turns a list of ids or of DeepLab-style lines
(``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``) into ``ImageSets/Segmentation/train_aug.txt``.
The layout is then checked. A user error (a missing root or list, an incomplete layout, an unreadable
annotation) ends in one line ``rca-prepare-voc: error: <what>`` on stderr and exit status 2; the label
files of the splits that could be read are written first.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rca_lightning.data.voc_classes import VOC_CLASS_NAMES
from rca_lightning.data.voc_dataset import VOCSegmentationDataset
from rca_lightning.data.voc_layout import DEFAULT_MASK_DIR, split_file_path, voc_layout_problems
from rca_lightning.utils.atomic import write_bytes_atomically
from rca_lightning.utils.errors import MissingInput, UserError

DEFAULT_SPLITS = ("train_aug", "train", "val")
SPLIT_MASK_DIRS = {"train_aug": "SegmentationClassAug"}
LABELS_NPY = "cls_labels.npy"
LABELS_TXT = "cls_labels.txt"
PROG = "rca-prepare-voc"
USER_ERROR_STATUS = 2


def convert_split_list(source: Path, destination: Path) -> int:
    """Write the image ids of ``source`` (ids or DeepLab-style path pairs) one per line to ``destination``.

    Returns:
        The number of ids written.
    """
    if not source.is_file():
        raise MissingInput(f"--split-list {source} not found: expected a list of image ids")
    ids = [Path(line.split()[0]).stem for line in source.read_text().splitlines() if line.strip()]
    write_bytes_atomically(destination, "".join(f"{image_id}\n" for image_id in ids).encode())
    return len(ids)


def collect_labels(root: Path, splits: Sequence[str]) -> dict[str, np.ndarray]:
    """Image id -> (20,) float32 multi-hot labels from the XMLs, over the splits that have a list."""
    labels: dict[str, np.ndarray] = {}
    for split in splits:
        if not split_file_path(root, split).is_file():
            continue
        dataset = VOCSegmentationDataset(
            root, split, VOC_CLASS_NAMES, mask_dir=SPLIT_MASK_DIRS.get(split, DEFAULT_MASK_DIR)
        )
        labels.update(zip(dataset.image_ids, dataset.labels, strict=True))
    return dict(sorted(labels.items()))


def write_label_files(labels: dict[str, np.ndarray], output: Path) -> None:
    """Write ``cls_labels.npy`` and ``cls_labels.txt`` (atomically) into ``output``."""
    buffer = io.BytesIO()
    np.save(buffer, np.array(labels, dtype=object), allow_pickle=True)
    write_bytes_atomically(output / LABELS_NPY, buffer.getvalue())
    lines = (
        " ".join([image_id, *(str(int(i)) for i in np.flatnonzero(vector))])
        for image_id, vector in labels.items()
    )
    write_bytes_atomically(output / LABELS_TXT, "".join(f"{line}\n" for line in lines).encode())


def _user_error(message: object) -> int:
    """Print one line naming what is wrong; the exit status of a user error."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return USER_ERROR_STATUS


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit status (0, or 2 for a user error, printed as one line)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the VOC2012 folder")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS), help="split lists to label")
    parser.add_argument("--output", type=Path, default=None, help="folder of the label files (default: root)")
    parser.add_argument("--split-list", type=Path, default=None, help="a list to convert into a split file")
    parser.add_argument("--split-name", default="train_aug", help="name of the converted split")
    args = parser.parse_args(argv)

    if not args.root.is_dir():
        return _user_error(f"root {args.root} not found: expected the VOC2012 folder")
    try:
        if args.split_list is not None:
            count = convert_split_list(args.split_list, split_file_path(args.root, args.split_name))
            print(f"wrote {count} ids to {split_file_path(args.root, args.split_name)}")
        problems = voc_layout_problems(
            args.root, {split: SPLIT_MASK_DIRS.get(split, DEFAULT_MASK_DIR) for split in args.splits}
        )
        labels = collect_labels(args.root, args.splits)
    except (UserError, FileNotFoundError, ValueError) as error:  # the data's, named in the message
        return _user_error(error)
    if labels:
        output = args.output or args.root
        write_label_files(labels, output)
        print(f"wrote labels of {len(labels)} images to {output / LABELS_NPY} and {output / LABELS_TXT}")
    if problems:
        return _user_error(f"VOC layout under {args.root} is incomplete: {'; '.join(problems)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

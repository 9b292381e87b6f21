"""Checks of a PASCAL VOC 2012 (+ SBD ``train_aug``) folder that name everything that is missing.

The expected layout (``root`` is the VOC2012 folder)::

    root/JPEGImages/<id>.jpg
    root/Annotations/<id>.xml                       image-level labels (every split)
    root/SegmentationClass/<id>.png                 palette PNG masks of train (1,464) and val (1,449)
    root/SegmentationClassAug/<id>.png              SBD-augmented masks of train_aug (10,582), plain PNG
    root/ImageSets/Segmentation/{train,val,train_aug}.txt   one image id per line
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from rca_lightning.data.image_ids import check_image_ids
from rca_lightning.utils.errors import MissingInput

SPLIT_FOLDER = Path("ImageSets") / "Segmentation"
DEFAULT_MASK_DIR = "SegmentationClass"
# Optional: the foreground classes of the folder, one per line in mask-value order (the built-in dataset
# writes it; the datamodule checks data.class_names against it).
CLASS_NAMES_FILE = "class_names.txt"
# What a user needs to know to find a missing piece (the official archives and SBD).
_HINTS = {
    "JPEGImages": "images of VOCtrainval_11-May-2012.tar",
    "SegmentationClass": "palette masks of VOCtrainval_11-May-2012.tar",
    "SegmentationClassAug": "SBD masks converted to PNG, values 0..20 and 255",
    "train_aug": "the 10,582 SBD + VOC train ids",
}
_EXAMPLES = 1


def numbered_split_ids(split_file: Path) -> list[tuple[int, str]]:
    """(line number, image id) of every non-empty line of a split list, the id its first token; unchecked."""
    lines = split_file.read_text().splitlines()
    return [(number, line.split()[0]) for number, line in enumerate(lines, start=1) if line.strip()]


def read_split_ids(split_file: Path) -> list[str]:
    """Image ids of a split list: the first token of every non-empty line, each a plain file name
    (``InvalidData`` naming the list, the line and the id otherwise: :mod:`rca_lightning.data.image_ids`)."""
    numbered = numbered_split_ids(split_file)
    check_image_ids(numbered, split_file)
    return [image_id for _, image_id in numbered]


def split_file_path(root: str | os.PathLike, split: str) -> Path:
    """``root/ImageSets/Segmentation/<split>.txt``."""
    return Path(root) / SPLIT_FOLDER / f"{split}.txt"


def _hint(name: str) -> str:
    return f" ({_HINTS[name]})" if name in _HINTS else ""


def _missing_files(folder: Path, ids: list[str], suffix: str) -> tuple[int, Path | None]:
    missing = [image_id for image_id in ids if not (folder / f"{image_id}{suffix}").is_file()]
    return len(missing), (folder / f"{missing[0]}{suffix}" if missing else None)


def voc_layout_problems(root: str | os.PathLike, split_mask_dirs: Mapping[str, str]) -> list[str]:
    """Everything missing from a VOC folder for the given splits, one short sentence each.

    Args:
        root: the VOC2012 folder.
        split_mask_dirs: split name -> mask folder (``SegmentationClass``, ``SegmentationClassAug``).

    Returns:
        Problems in reading order; empty when the layout is complete.

    Raises:
        InvalidData: a split list holds an id that is not a plain file name (``../x``, an absolute path).
    """
    root = Path(root)
    if not root.is_dir():
        return [f"dataset root {root} does not exist (expected the VOC2012 folder)"]
    # Annotations/ is not required: labels of an image without an XML come from its mask.
    problems = (
        []
        if (root / "JPEGImages").is_dir()
        else [f"folder {root / 'JPEGImages'} is missing{_hint('JPEGImages')}"]
    )
    for split, mask_dir in split_mask_dirs.items():
        split_file = split_file_path(root, split)
        if not (root / mask_dir).is_dir():
            problems.append(
                f"folder {root / mask_dir} (masks of split {split!r}) is missing{_hint(mask_dir)}"
            )
        if not split_file.is_file():
            problems.append(f"split list {split_file} is missing{_hint(split)}")
            continue
        numbered = numbered_split_ids(split_file)
        malformed = [image_id for _, image_id in numbered if "/" in image_id or image_id.endswith(".jpg")]
        if malformed:
            problems.append(
                f"{split_file} line {malformed[0]!r}: expected one image id per line "
                "(convert with `python -m rca_lightning.cli.prepare_voc ROOT --split-list FILE`)"
            )
            continue
        check_image_ids(numbered, split_file)
        ids = [image_id for _, image_id in numbered]
        for folder, suffix, what in (
            (root / "JPEGImages", ".jpg", "images"),
            (root / mask_dir, ".png", "masks"),
        ):
            if not folder.is_dir():
                continue
            count, first = _missing_files(folder, ids, suffix)
            if count:
                problems.append(
                    f"{count} of {len(ids)} {what} listed in {split_file} are missing, first: {first}"
                )
    return problems


def check_voc_layout(root: str | os.PathLike, split_mask_dirs: Mapping[str, str]) -> None:
    """Raise ``MissingInput`` naming every missing folder, list and file count (one line).

    Args:
        root: the VOC2012 folder.
        split_mask_dirs: split name -> mask folder.
    """
    problems = voc_layout_problems(root, split_mask_dirs)
    if problems:
        raise MissingInput(f"VOC layout under {root} is incomplete: " + "; ".join(problems))

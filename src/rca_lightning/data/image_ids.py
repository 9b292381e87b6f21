"""Image ids name files: ``<folder>/<id>.<ext>`` is read and written for every id of every split, so an id
must be a plain file name, whatever file it was read from.

An id is refused where it is empty, holds a path separator (``/``, ``\\``; an absolute path starts with one)
or a NUL character, or is ``.`` or ``..``. Split lists (:func:`rca_lightning.data.voc_layout.read_split_ids`)
and COCO annotation files (:func:`rca_lightning.data.coco.check_file_names`) are checked where they are
read, for every split; the writers check their targets again (:func:`rca_lightning.utils.atomic.path_inside`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from rca_lightning.utils.errors import InvalidData

_SEPARATORS = ("/", "\\")
_DOT_NAMES = (".", "..")


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` cannot be a file name inside a folder, or None when it can.

    Args:
        name: an image id, or one part of a relative path.
    """
    if not name:
        return "is empty"
    if "\0" in name:
        return "holds a NUL character"
    if any(separator in name for separator in _SEPARATORS):
        return "holds a path separator ('/' or '\\')"
    if name in _DOT_NAMES:
        return f"is {name!r}"
    return None


def check_image_ids(numbered_ids: Iterable[tuple[int, str]], listed_in: str | os.PathLike) -> None:
    """Raise ``InvalidData`` naming the list, the line and the first id that is not a plain file name.

    Args:
        numbered_ids: (line number, image id) pairs, in list order.
        listed_in: the split list named in the message.
    """
    for line, image_id in numbered_ids:
        reason = unsafe_name_reason(image_id)
        if reason:
            raise InvalidData(
                f"{listed_in} line {line}: image id {image_id!r} {reason}; expected a file name without "
                "folder parts"
            )


def relative_path_problem(path: str) -> str | None:
    """Why ``path`` is not a relative path staying inside its folder (``a.jpg``, ``sub/a.jpg``), or None."""
    if path.startswith(_SEPARATORS):
        return "is an absolute path"
    for part in path.split("/"):
        reason = unsafe_name_reason(part)
        if reason:
            return f"has a part {part!r} that {reason}"
    return None


__all__ = ["check_image_ids", "relative_path_problem", "unsafe_name_reason"]

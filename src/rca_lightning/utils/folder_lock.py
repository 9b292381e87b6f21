"""One owner per output folder: a stage holds ``<folder>/.lock`` (``fcntl.flock``, exclusive) while it runs.

A second process that asks for the same folder stops at once with one line naming the folder and the pid
written in the lock file (:class:`~rca_lightning.utils.errors.FolderInUse`). The kernel releases the lock
when its holder ends, however it ends (a killed run leaves no stale lock: only its pid in the file). The file
stays: removing it would let a third process lock a new file while a second still holds the removed one.

Within a process the lock is re-entrant (the pipeline runs its stages in-process, inside its own run folder's
lock), and of a torchrun / srun launch only the first process takes it (:func:`launch_is_main`): the others
work in the folder it holds.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rca_lightning.utils.errors import FolderInUse
from rca_lightning.utils.ranks import launch_is_main

LOCK_FILE = ".lock"
# The folders this process holds (resolved), each with how many holders nest in it.
_held: dict[Path, int] = {}


@contextmanager
def owned_folder(folder: str | os.PathLike, setting: str) -> Iterator[Path]:
    """Hold ``folder`` (created if absent) for the duration of the block.

    Args:
        folder: the output folder.
        setting: the setting that named it (``hydra.run.dir``, ``cams_dir``, ...), named in the error.

    Yields:
        The folder, resolved.

    Raises:
        FolderInUse: another process holds the folder.
    """
    path = Path(folder).expanduser().resolve()
    if path in _held or not launch_is_main():
        _held[path] = _held.get(path, 0) + 1
        try:
            yield path
        finally:
            _release(path)
        return
    path.mkdir(parents=True, exist_ok=True)
    # No O_TRUNC: a process that is refused must not wipe the holder's pid.
    descriptor = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        holder = _holder(descriptor)
        os.close(descriptor)
        raise FolderInUse(
            f"{setting}={path}: in use by process {holder} ({path / LOCK_FILE}); expected one process per "
            "output folder: wait for it to end, or choose another folder"
        ) from error
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    _held[path] = 1
    try:
        yield path
    finally:
        _release(path)
        os.close(descriptor)  # releases the lock


def _release(path: Path) -> None:
    _held[path] -= 1
    if not _held[path]:
        del _held[path]


def _holder(descriptor: int) -> str:
    """The pid the holder wrote (digits only: the file is in a folder anyone may write), or ``unknown`` when
    it has not written it yet."""
    written = re.match(rb"\d+", os.pread(descriptor, 32, 0))
    return written.group().decode() if written else "unknown"


__all__ = ["LOCK_FILE", "owned_folder"]

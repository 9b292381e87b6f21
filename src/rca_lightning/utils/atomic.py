"""Atomic file writes: a reader never sees a half-written output, and a killed writer leaves no litter.

A write goes to a temporary file beside its target, named ``.<target name>.atomic-<16 hex digits>.tmp``,
which is renamed over the target once it is complete. A process killed mid-write cannot remove its
temporary file, so the next writes into the same folder do: the first write of a process into a folder
(and then at most once a minute) removes the stray temporary files there, i.e. those that

- match that name pattern (of any target: an epoch's checkpoint is written only once),
- are not locked: a writer holds ``flock`` on its temporary file from creating it until it is renamed
  or removed, and the kernel drops the lock when the writer dies, however it dies (``SIGKILL``
  included). A lock, unlike a process id in the name, is not fooled by process ids reused, nor by
  other PID namespaces (containers) sharing the folder,
- and have not been modified for ``STALE_AFTER_SECONDS``: on network file systems whose locks do not
  reach other hosts, this keeps a temporary file another host is writing unless that writer has stalled
  for so long. (The instant between a writer creating its file and locking it needs no such guard: a
  writer whose file was swept in that instant sees it, by the file's inode, and starts a new one.)
  A rerun after a kill therefore finds its folder clean from its first write on, a few seconds later.

Writers of per-image files named from ids (read from files the user points at) name their targets with
:func:`path_inside`, which refuses a name that resolves outside the output folder.

Where the file system has no ``flock`` the temporary files are left alone. Files are created with the
usual mode (``0o666`` less the process's umask, as ``open()`` would make them), not ``mkstemp``'s
``0o600``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from rca_lightning.utils.errors import InvalidData

STALE_AFTER_SECONDS = 5.0
SWEEP_INTERVAL_SECONDS = 60.0
_TEMPORARY_MARKER = ".atomic-"
_TEMPORARY_NAME = re.compile(r"\..+\.atomic-[0-9a-f]{16}\.tmp")
# Folder -> time.monotonic() of this process's last sweep of it.
_last_sweep_of_folder: dict[Path, float] = {}


def path_inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, checked to resolve inside ``folder``: a writer of per-image files named from ids
    (which come from files the user points at) never writes elsewhere, even if a dataset check was bypassed.

    Args:
        folder: the output folder (need not exist yet).
        name: the file name, e.g. ``f"{image_id}.png"``.

    Raises:
        InvalidData: the path resolves outside ``folder`` (``..``, an absolute path, a link leading out);
            the message names ``name`` and the folder.
    """
    path = Path(folder) / name
    if "\0" in name:  # names no file (and resolve() would raise)
        outside = "holds a NUL character"
    else:
        root, target = Path(folder).resolve(), path.resolve()
        outside = "" if target != root and target.is_relative_to(root) else f"resolves to {target}"
    if outside:
        raise InvalidData(
            f"{name!r} {outside}, not a file inside the output folder {folder}; expected image ids that "
            "name files inside it (no '/', '..', NUL or absolute path)"
        )
    return path


def publish_folder(staging: Path, root: Path, finished_elsewhere: Callable[[], bool]) -> None:
    """Rename the finished folder ``staging`` to ``root``, moving an earlier ``root`` aside and deleting it
    first; when another process published ``root`` in the meantime (``finished_elsewhere()``), keep its."""
    if root.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, retired / root.name)
        shutil.rmtree(retired, ignore_errors=True)
    try:
        os.replace(staging, root)
    except OSError:
        if not finished_elsewhere():
            raise


def temporary_path(path: Path) -> Path:
    """A new temporary file name for ``path``, in its folder."""
    return path.with_name(f".{path.name}{_TEMPORARY_MARKER}{secrets.token_hex(8)}.tmp")


def remove_stray_temporaries(folder: Path) -> list[Path]:
    """Remove the atomic writer's temporary files in ``folder`` whose writer is gone (module docstring).

    Returns:
        The removed files.
    """
    removed = []
    now = time.time()
    with os.scandir(folder) as entries:
        candidates = [Path(entry.path) for entry in entries if _TEMPORARY_NAME.fullmatch(entry.name)]
    for candidate in candidates:
        try:
            with open(candidate, "rb") as held:
                if now - os.fstat(held.fileno()).st_mtime < STALE_AFTER_SECONDS:
                    continue
                fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(candidate)
        except OSError:  # locked by a live writer, renamed or removed meanwhile, or no flock here
            continue
        removed.append(candidate)
    return removed


def _sweep_now_and_then(folder: Path) -> None:
    """``remove_stray_temporaries`` at the first write of this process into ``folder``, then at most once
    per ``SWEEP_INTERVAL_SECONDS`` (a folder of per-image files is written thousands of times)."""
    last_sweep = _last_sweep_of_folder.get(folder)
    if last_sweep is None or time.monotonic() - last_sweep >= SWEEP_INTERVAL_SECONDS:
        _last_sweep_of_folder[folder] = time.monotonic()
        with contextlib.suppress(OSError):  # housekeeping: an unreadable folder does not stop the write
            remove_stray_temporaries(folder)


def _create_locked_temporary(path: Path) -> tuple[int, Path]:
    """Create and ``flock`` a new temporary file for ``path``; returns its descriptor and name."""
    while True:
        temporary = temporary_path(path)
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):  # no flock on this file system: the file is then never swept
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _names_this_file(temporary, descriptor):
            return descriptor, temporary
        os.close(descriptor)  # swept between its creation and its lock: take a new name


def _names_this_file(path: Path, descriptor: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; on success flush it to disk and rename it to
    ``path`` (one ``os.replace`` on the same file system), on error remove it and leave ``path`` as it was.

    Stray temporary files of killed writers in the folder are removed first (module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_now_and_then(path.parent)
    descriptor, temporary = _create_locked_temporary(path)
    with os.fdopen(descriptor, "wb") as f:  # closing it releases the lock, after the rename
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def write_bytes_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to a temporary file beside ``path`` and rename it into place."""
    with atomic_output(path) as f:
        f.write(content)


def write_json_atomically(path: Path, content: dict) -> None:
    write_bytes_atomically(path, json.dumps(content, indent=2).encode())

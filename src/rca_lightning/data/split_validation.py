"""Validation of a split before training: every listed id's files are read once, up front, in parallel.

The datamodules' ``prepare_data`` (rank zero) calls :func:`validate_split` for each split a run uses, after
the layout check, so a damaged dataset stops the run in one line before any training step instead of
training on grey-filled images or unlabelled ones. What makes an id's files valid is
:mod:`rca_lightning.data.file_checks`; here, what applies to the whole split:

- no id is listed twice (it would be trained on twice, and a val image scored twice);
- ``data.validate`` chooses how much is decoded: ``full`` every id, ``quick`` a fixed-seed sample of
  ``max(200, 5 %)`` of the ids (the repeated-id check and the layout check still cover every id), ``off``
  nothing;
- the ids are checked in chunks by a process pool (at most one process per CPU), with a progress bar on a
  terminal;
- a faulty split raises :class:`~rca_lightning.utils.errors.InvalidData` naming the split list, how many ids
  fail, and the first of them (in list order) with what is wrong and the file.

Cache: the ids that passed are recorded in a small JSON file per split and mask folder (and saliency folder,
where a run reads saliency maps), ``<cache folder>/.validation/<split>-<key>.json``, each under a digest of
its files' (path, size, modification time in ns); the file also holds the class names. A later run decodes
only the ids whose files changed (none when nothing did). The file is written atomically; where the folder
is read-only the run goes on without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from rca_lightning.data.file_checks import ImageFiles, problems_of
from rca_lightning.utils.atomic import write_bytes_atomically
from rca_lightning.utils.errors import InvalidData, InvalidSetting

log = logging.getLogger(__name__)

VALIDATE_MODES = ("full", "quick", "off")
QUICK_SAMPLE_SIZE = 200
QUICK_SAMPLE_FRACTION = 0.05
QUICK_SAMPLE_SEED = 0
CACHE_FOLDER = ".validation"
CACHE_VERSION = 1
# Fewer ids than this are checked in this process: starting a pool would cost more than it saves.
IN_PROCESS_BELOW = 64
_CHUNKS_PER_WORKER = 4
_MAX_CHUNK = 256


@dataclass(frozen=True)
class ValidationReport:
    """What one validation did.

    Attributes:
        listed: ids in the split.
        checked: ids whose files were read now.
        cached: ids chosen for checking whose files had passed before, unchanged since.
        seconds: wall time of the validation.
    """

    listed: int
    checked: int
    cached: int
    seconds: float


def check_validate_mode(mode: str) -> str:
    """``mode`` if it is one of ``VALIDATE_MODES``; else raise ``InvalidSetting`` naming ``data.validate``."""
    if mode not in VALIDATE_MODES:
        raise InvalidSetting(f"data.validate={mode!r}: expected one of {list(VALIDATE_MODES)}")
    return mode


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def quick_sample(count: int) -> list[int]:
    """Positions of the ids ``quick`` checks: ``max(200, 5 %)`` of ``count``, fixed seed, in list order."""
    size = min(count, max(QUICK_SAMPLE_SIZE, math.ceil(QUICK_SAMPLE_FRACTION * count)))
    return sorted(random.Random(QUICK_SAMPLE_SEED).sample(range(count), size))


def cache_file_for(
    cache_dir: str | os.PathLike,
    split: str,
    mask_folder: str | os.PathLike,
    saliency_folder: str | os.PathLike | None = None,
) -> Path:
    """The cache file of ``split`` with masks in ``mask_folder`` (and saliency maps in ``saliency_folder``,
    where a run reads them): pseudo and true masks of one split, and runs with and without saliency maps,
    have their own files, so stages that alternate between them do not invalidate each other's."""
    folders = str(Path(mask_folder).absolute())
    if saliency_folder is not None:
        folders += "\0" + str(Path(saliency_folder).absolute())
    key = hashlib.blake2b(folders.encode(), digest_size=4).hexdigest()
    return Path(cache_dir) / CACHE_FOLDER / f"{split}-{key}.json"


def files_digest(files: ImageFiles) -> str:
    """Digest of the (path, size, mtime_ns) of an id's files; a missing file counts as such."""
    parts = []
    for path in files.paths():
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            parts.append(f"{path}\0absent")
            continue
        parts.append(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def check_repeated_ids(image_ids: Sequence[str], listed_in: str | os.PathLike) -> None:
    """Raise ``InvalidData`` when an id is listed more than once, naming the first such id."""
    counts = Counter(image_ids)
    repeated = [image_id for image_id in dict.fromkeys(image_ids) if counts[image_id] > 1]
    if repeated:
        first = repeated[0]
        raise InvalidData(
            f"{listed_in}: {len(repeated)} image id(s) listed more than once, first {first!r} "
            f"({counts[first]} times); expected each id once"
        )


def _read_cache(cache_file: Path | None, class_names: Sequence[str]) -> dict[str, str]:
    """Image id -> files digest of the ids that passed, from a cache written for the same classes."""
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        content = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: check again
    if (
        not isinstance(content, dict)
        or content.get("version") != CACHE_VERSION
        or content.get("class_names") != list(class_names)
    ):
        return {}
    passed = content.get("passed")
    return passed if isinstance(passed, dict) else {}


def _write_cache(cache_file: Path, class_names: Sequence[str], passed: dict[str, str]) -> None:
    content = {"version": CACHE_VERSION, "class_names": list(class_names), "passed": passed}
    try:
        write_bytes_atomically(cache_file, json.dumps(content, separators=(",", ":")).encode())
    except OSError as error:  # a read-only dataset folder: validation still ran, next time it runs again
        log.warning("Validation results not cached (%s): %s", cache_file, error)


def _chunks(entries: Sequence[ImageFiles], workers: int) -> list[Sequence[ImageFiles]]:
    size = min(_MAX_CHUNK, max(1, math.ceil(len(entries) / (workers * _CHUNKS_PER_WORKER))))
    return [entries[start : start + size] for start in range(0, len(entries), size)]


def check_files(
    entries: Sequence[ImageFiles], class_names: Sequence[str], workers: int | None = None, label: str = ""
) -> list[str | None]:
    """The problem of each entry (None where there is none), in order; a process pool reads the files.

    Args:
        entries: the ids' files.
        class_names: foreground classes in mask-value order.
        workers: processes (default and at most: the CPUs this process may use).
        label: what the progress bar says it is validating.
    """
    if not entries:
        return []
    workers = min(available_cpus(), workers or available_cpus())
    chunks = _chunks(entries, workers)
    results: list[list[str | None]] = [[] for _ in chunks]
    with tqdm(total=len(entries), desc=f"Validating {label}", unit="image", disable=None, leave=False) as bar:
        if workers <= 1 or len(entries) < IN_PROCESS_BELOW:
            for position, chunk in enumerate(chunks):
                results[position] = problems_of(chunk, class_names)
                bar.update(len(chunk))
        else:
            # fork where available: workers start at once without re-importing the package.
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
                futures = {
                    pool.submit(problems_of, chunk, class_names): position
                    for position, chunk in enumerate(chunks)
                }
                for future in as_completed(futures):
                    position = futures[future]
                    results[position] = future.result()
                    bar.update(len(chunks[position]))
    return [problem for chunk_problems in results for problem in chunk_problems]


def validate_split(
    files: Sequence[ImageFiles],
    class_names: Sequence[str],
    listed_in: str | os.PathLike,
    mode: str = "full",
    cache_file: Path | None = None,
    workers: int | None = None,
) -> ValidationReport:
    """Check a split's ids and files (module docstring); raise ``InvalidData`` naming the first faulty id.

    Args:
        files: the files of every listed id, in list order.
        class_names: foreground classes in mask-value order.
        listed_in: the split list (or annotation file) named in messages.
        mode: ``full``, ``quick`` or ``off`` (``data.validate``).
        cache_file: where the ids that passed are recorded (:func:`cache_file_for`); None: no cache.
        workers: processes reading files (default: the CPUs).

    Returns:
        What was done (ids read now, ids taken from the cache, seconds).
    """
    started = time.perf_counter()
    if check_validate_mode(mode) == "off":
        return ValidationReport(len(files), 0, 0, 0.0)
    check_repeated_ids([entry.image_id for entry in files], listed_in)
    chosen = range(len(files)) if mode == "full" else quick_sample(len(files))
    passed_before = _read_cache(cache_file, class_names)
    digests = {position: files_digest(files[position]) for position in chosen}
    pending = [
        position for position in chosen if passed_before.get(files[position].image_id) != digests[position]
    ]
    problems = check_files(
        [files[position] for position in pending], class_names, workers, Path(listed_in).name
    )
    faulty = [
        (files[position].image_id, problem)
        for position, problem in zip(pending, problems, strict=True)
        if problem
    ]
    if cache_file is not None and pending:
        faulty_ids = {image_id for image_id, _ in faulty}
        listed = {entry.image_id for entry in files}
        passed = {image_id: digest for image_id, digest in passed_before.items() if image_id in listed}
        passed.update({files[position].image_id: digests[position] for position in pending})
        for image_id in faulty_ids:
            passed.pop(image_id, None)
        _write_cache(cache_file, class_names, passed)
    report = ValidationReport(
        len(files), len(pending), len(chosen) - len(pending), time.perf_counter() - started
    )
    if faulty:
        sampled = " of the quick sample" if mode == "quick" else ""
        raise InvalidData(
            f"{listed_in}: {len(faulty)} of {len(chosen)} image ids{sampled} fail validation, "
            f"first {faulty[0][1]}"
        )
    log.info(
        "Validated %s: %d ids, %d read now, %d unchanged since they passed (%.1f s)",
        listed_in,
        report.listed,
        report.checked,
        report.cached,
        report.seconds,
    )
    return report


__all__ = [
    "CACHE_FOLDER",
    "VALIDATE_MODES",
    "ValidationReport",
    "cache_file_for",
    "check_files",
    "check_repeated_ids",
    "check_validate_mode",
    "quick_sample",
    "validate_split",
]

"""Wall time of the pipeline's stages across attempts, kept in the run's ``pipeline_state.json``."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidData
from rca_lightning.utils.state_files import read_json_object

STATE_FILE = "pipeline_state.json"


def last_modification(folder: Path) -> float:
    """The latest modification time (``time.time()`` scale) of ``folder`` and everything under it."""
    latest = folder.stat().st_mtime if folder.exists() else 0.0
    for root, directories, files in os.walk(folder):
        for name in [*directories, *files]:
            with contextlib.suppress(OSError):  # removed meanwhile
                latest = max(latest, os.stat(os.path.join(root, name), follow_symlinks=False).st_mtime)
    return latest


def read_clock_state(path: Path) -> dict:
    """The ``{"stages": {name: {"seconds": s, ["attempt_started": t]}}}`` of a run's ``pipeline_state.json``;
    InvalidData naming the file when it is damaged or foreign."""
    expected = 'the pipeline\'s stage times {"stages": {<stage>: {"seconds": <number>}}}'
    state = read_json_object(path, expected)
    stages = state.get("stages")
    entries = list(stages.values()) if isinstance(stages, dict) else [None]
    if not all(isinstance(entry, dict) and _is_time(entry.get("seconds")) for entry in entries) or not all(
        _is_time(entry.get("attempt_started", 0.0)) for entry in entries
    ):
        shown = repr(stages) if len(repr(stages)) <= 80 else f"{repr(stages)[:77]}..."
        raise InvalidData(f"{path}: expected {expected} with finite non-negative times, got {shown}")
    return state


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf


class StageClock:
    """The seconds each stage took, adding up every attempt, in ``<run>/pipeline_state.json``.

    The file records when an attempt starts, so an attempt that never reached the end (killed, or stopped
    by an error) is counted when the stage is next visited: from its start to the last modification of a
    file in the stage's folder.
    """

    def __init__(self, run_dir: Path, writes: bool = True) -> None:
        self.writes = writes  # False in all but the first of several processes (they share the file)
        self.path = run_dir / STATE_FILE
        self.state = read_clock_state(self.path) if self.path.is_file() else {"stages": {}}

    @property
    def seconds(self) -> dict[str, float]:
        """Stage name -> its seconds so far (stages visited by this run or an earlier one)."""
        return {name: entry["seconds"] for name, entry in self.state["stages"].items()}

    def settle(self, name: str, folder: Path) -> float:
        """Count an unfinished earlier attempt of stage ``name`` (its files are in ``folder``); returns
        the stage's seconds so far."""
        entry = self.state["stages"].get(name, {})
        seconds = entry.get("seconds", 0.0)
        if "attempt_started" in entry:
            seconds += max(0.0, last_modification(folder) - entry["attempt_started"])
            self.record(name, seconds)
        return seconds

    def record(self, name: str, seconds: float, attempt_started: float | None = None) -> None:
        """Write stage ``name``'s seconds so far (and the start time of the attempt now running)."""
        entry = {"seconds": seconds}
        if attempt_started is not None:
            entry["attempt_started"] = attempt_started
        self.state["stages"][name] = entry
        if self.writes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.path, self.state)

    def time(self, name: str, folder: Path, run: Callable[[], object]) -> None:
        """Run ``run()`` as an attempt of stage ``name``, adding its seconds to the stage's."""
        seconds = self.settle(name, folder)
        self.record(name, seconds, attempt_started=time.time())
        start = time.perf_counter()
        run()
        self.record(name, seconds + time.perf_counter() - start)

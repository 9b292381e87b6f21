"""Wall time of the pipeline's stages across attempts, kept in the run's ``pipeline_state.json``."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from rca_lightning.utils.atomic import write_json_atomically

STATE_FILE = "pipeline_state.json"


def last_modification(folder: Path) -> float:
    """The latest modification time (``time.time()`` scale) of ``folder`` and everything under it."""
    latest = folder.stat().st_mtime if folder.exists() else 0.0
    for root, directories, files in os.walk(folder):
        for name in [*directories, *files]:
            with contextlib.suppress(OSError):  # removed meanwhile
                latest = max(latest, os.stat(os.path.join(root, name), follow_symlinks=False).st_mtime)
    return latest


class StageClock:
    """The seconds each stage took, adding up every attempt, in ``<run>/pipeline_state.json``.

    The file records when an attempt starts, so an attempt that never reached the end (killed, or stopped
    by an error) is counted when the stage is next visited: from its start to the last modification of a
    file in the stage's folder.
    """

    def __init__(self, run_dir: Path, writes: bool = True) -> None:
        self.writes = writes  # False in all but the first of several processes (they share the file)
        self.path = run_dir / STATE_FILE
        self.state = json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}}

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

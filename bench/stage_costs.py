"""The measuring machinery of ``bench/scale_rehearsal.py``: one step in a process of its own (its wall time,
peak resident memory, peak GPU memory), the bytes a stage leaves, and the two-point fit of a stage's cost."""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path

from stage_probe import STACK, measure_into_log


@dataclass
class StepCost:
    """What one measured step cost: ``seconds`` (the pipeline's own clock of the stage, or the wall time of a
    step that has none), ``wall_seconds`` (the whole process from its fork; the imports are the server's),
    the peak resident memory of its largest process (DataLoader and CRF workers are processes of their own)
    and its peak GPU memory (None without CUDA), the bytes it left, the work it did (``items``) and what its
    bytes grow with (``disk_items``: images, where a trainer's items are steps)."""

    items: float
    disk_items: float = 0.0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    peak_gpu_mib: float | None = None
    disk_bytes: int = 0
    artefact_bytes: dict[str, int] = field(default_factory=dict)


@functools.cache
def probe_processes() -> BaseContext:
    """Where the probes' processes come from: a server that imported :data:`STACK` once forks each (no CUDA
    and no thread pool of its own to inherit: it only imported)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["stage_probe", *STACK])
    return context


def run_probe(step: str, overrides: list[str], log_file: Path) -> StepCost:
    """Run ``stage_probe.py``'s ``step`` with ``overrides`` in a process of its own (its output into
    ``log_file``): the step's own seconds where it keeps them (else the wall time); RuntimeError naming the
    log when it fails."""
    peak_file = log_file.with_suffix(".peak.json")
    peak_file.unlink(missing_ok=True)
    started = time.perf_counter()
    process = probe_processes().Process(
        target=measure_into_log, args=(step, str(peak_file), overrides, str(log_file)), name=f"probe {step}"
    )
    process.start()
    process.join()
    wall = time.perf_counter() - started
    if process.exitcode != 0:
        tail = log_file.read_text().splitlines()[-15:]
        command = " ".join([step, *overrides[:3]])
        raise RuntimeError(f"{command} ... failed (log: {log_file}):\n" + "\n".join(tail))
    peak = json.loads(peak_file.read_text())
    seconds = wall if peak["seconds"] is None else peak["seconds"]
    return StepCost(
        items=0,
        seconds=seconds,
        wall_seconds=wall,
        peak_rss_mib=peak["peak_rss_mib"],
        peak_gpu_mib=peak["peak_gpu_mib"],
    )


def disk_usage(folder: Path) -> tuple[int, dict[str, int]]:
    """Bytes of every file under ``folder`` (links not followed), in all and by top-level entry."""
    by_entry: dict[str, int] = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            entry = path.relative_to(folder).parts[0]
            by_entry[entry] = by_entry.get(entry, 0) + path.lstat().st_size
    return sum(by_entry.values()), by_entry


@dataclass(frozen=True)
class LinearCost:
    """``fixed + per_item * items`` through two measured points (a slope below 0 taken as 0: a cost that does
    not grow, like a checkpoint's bytes). With ``bound_noise``, where the larger size did not cost more (the
    difference lost in noise: too small sizes, a loaded machine), the bound that cannot be too low is taken
    instead: all of the larger size's cost per item, no fixed cost (``proportional``). A cost that does the
    same work at both sizes (``items`` equal) is fixed: the larger of the two."""

    fixed: float
    per_item: float
    proportional: bool = False

    @classmethod
    def through(
        cls, small: tuple[float, float], large: tuple[float, float], bound_noise: bool = False
    ) -> LinearCost:
        (items_small, cost_small), (items_large, cost_large) = small, large
        if items_large == items_small:  # a cost per run (the report): what the larger size took
            return cls(fixed=max(cost_small, cost_large), per_item=0.0)
        per_item = max(0.0, (cost_large - cost_small) / (items_large - items_small))
        if per_item == 0 and bound_noise:
            return cls(fixed=0.0, per_item=cost_large / items_large, proportional=True)
        return cls(fixed=max(0.0, cost_small - per_item * items_small), per_item=per_item)

    def at(self, items: float) -> float:
        return self.fixed + self.per_item * items


def stage_row(
    name: str, item: str, small: StepCost, large: StepCost, full_items: float, full_disk_items: float
) -> dict:
    """One stage's row of the table: the slope and growth between the two sizes and the projection to
    ``full_items`` (bytes: to ``full_disk_items``).

    ``growth`` is the per-item seconds at the larger size over those at the smaller one: 1 for a cost
    proportional to the work, below 1 while a fixed cost (model build, process start) is shared by more
    items, above 1 only when each item costs more in a larger dataset (worse than linear)."""
    seconds = LinearCost.through((small.items, small.seconds), (large.items, large.seconds), bound_noise=True)
    disk = LinearCost.through((small.disk_items, small.disk_bytes), (large.disk_items, large.disk_bytes))
    rss = LinearCost.through((small.items, small.peak_rss_mib), (large.items, large.peak_rss_mib))
    gpu = [cost.peak_gpu_mib for cost in (small, large)]
    return {
        "name": name,
        "item": item,
        "items": [small.items, large.items],
        "full_items": full_items,
        "seconds": [small.seconds, large.seconds],
        "wall_seconds": [small.wall_seconds, large.wall_seconds],
        "seconds_fixed": seconds.fixed,
        "seconds_per_item": seconds.per_item,
        "seconds_fit": "proportional (no slope beyond noise)" if seconds.proportional else "two-point",
        "growth": (large.seconds / large.items) / (small.seconds / small.items),
        "projected_seconds": seconds.at(full_items),
        "peak_rss_mib": large.peak_rss_mib,
        "peak_rss_mib_measured": [small.peak_rss_mib, large.peak_rss_mib],
        "projected_peak_rss_mib": rss.at(full_items),
        "peak_gpu_mib": None if None in gpu else max(gpu),
        "disk_bytes_per_item": disk.per_item,
        "disk_item": "run" if full_disk_items == 1 else "image",
        "disk_bytes": [small.disk_bytes, large.disk_bytes],
        "artefact_bytes": large.artefact_bytes,
        "projected_disk_bytes": disk.at(full_disk_items),
    }


def per_epoch_fit(row: dict, small: StepCost, longer: StepCost, epochs: int, full_epochs: float) -> dict:
    """A trainer's ``fixed + per_epoch x epochs + per_step x steps``: ``row``'s per-step slope (two sizes over
    ``epochs``), the per-epoch cost from ``longer`` (the smaller size over twice the epochs); the fields of
    ``row`` it changes, projected to ``full_epochs`` and the row's full steps. A per-epoch cost lost in noise
    is taken as 0 (and the fixed cost keeps it)."""
    per_step = row["seconds_per_item"]
    per_epoch = max(0.0, (longer.seconds - small.seconds - per_step * (longer.items - small.items)) / epochs)
    if row["seconds_fit"] != "two-point":
        per_epoch = 0.0
    fixed = max(0.0, small.seconds - per_epoch * epochs - per_step * small.items)
    return {
        "seconds_fixed": fixed,
        "seconds_per_epoch": per_epoch,
        "seconds_longer": longer.seconds,
        "full_epochs": full_epochs,
        "seconds_fit": f"{row['seconds_fit']} in steps, per epoch from {2 * epochs} epochs",
        "projected_seconds": fixed + per_epoch * full_epochs + per_step * row["full_items"],
    }


def check_rows(rows: list[dict]) -> None:
    """ValueError naming the first stage whose measured or projected figure is not finite."""
    keys = ("seconds_per_item", "peak_rss_mib", "disk_bytes_per_item", "growth", "projected_seconds")
    for row in rows:
        for key in keys:
            if not math.isfinite(row[key]):
                raise ValueError(f"stage {row['name']}: {key} is {row[key]}")

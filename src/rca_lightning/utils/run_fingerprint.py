"""What a run folder's outputs were made with: the resolved config its stage started with, recorded once in
``<run>/fingerprint.json`` and compared whenever the stage runs there again (a resume).

A resume with other settings would continue the weights under a schedule, data or model they were not made
with, and Hydra would rewrite ``.hydra/config.yaml``, the record later stages read. So a difference is refused
in one line naming the first differing dotted key, before anything is written. Settings that may differ on a
resume, by design (:data:`RESUME_FREE_KEYS`): the checkpoint resumed from (``ckpt_path``), where metrics are
also sent (``logger``), what is shown on the console, how long ranks wait at a barrier and, for
``rca-pipeline``, which stages run with which overrides (``stages``: every training stage has a fingerprint
of its own in its folder). Everything else
counts, ``trainer.max_epochs`` included (it sets the learning-rate schedule): to continue with other settings,
start a new run folder with ``ckpt_path=<old run>/checkpoints/last.ckpt``. Paths inside the run folder are
recorded relative to it, so a moved run folder still resumes.
"""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.ranks import launch_is_main
from rca_lightning.utils.state_files import read_json_object

FINGERPRINT_FILE = "fingerprint.json"
RESUME_FREE_KEYS = (
    "barrier_timeout_s",
    "ckpt_path",
    "logger",
    "print_config",
    # rca-pipeline's stage switches and stage overrides: a resumed pipeline may switch a stage on, or give a
    # stage that has not run other settings; each stage that trains checks its own folder's fingerprint.
    "stages",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
)
# What ``paths.output_dir`` is recorded as: the run folder itself, wherever it lies.
RUN_FOLDER = "<run>"
_ABSENT = "<absent>"


def run_fingerprint(cfg: DictConfig) -> dict:
    """``cfg`` resolved, without :data:`RESUME_FREE_KEYS`, with the run folder written as ``<run>``."""
    config = copy.deepcopy(cfg)
    paths = config.get("paths")
    if isinstance(paths, DictConfig) and "output_dir" in paths.keys():  # keys(): nothing resolved yet
        with open_dict(paths):
            paths.output_dir = RUN_FOLDER
    resolved = OmegaConf.to_container(config, resolve=True)
    for key in RESUME_FREE_KEYS:
        *parents, name = key.split(".")
        node = resolved
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(name, None)
    return resolved


def first_difference(recorded: object, current: object, key: str = "") -> str | None:
    """The first dotted key (in the recorded order, then the new keys) whose values differ, or None."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        for name in [*recorded, *(name for name in current if name not in recorded)]:
            inner = f"{key}.{name}" if key else str(name)
            found = first_difference(recorded.get(name, _ABSENT), current.get(name, _ABSENT), inner)
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(current, list) and len(recorded) == len(current):
        for index, (old, new) in enumerate(zip(recorded, current, strict=True)):
            found = first_difference(old, new, f"{key}[{index}]")
            if found is not None:
                return found
        return None
    return None if recorded == current else key or "<config>"


def check_run_fingerprint(folder: Path, fingerprint: dict) -> bool:
    """Whether ``folder`` records a fingerprint; InvalidSetting naming the first differing key when it is not
    ``fingerprint``, InvalidData when the file is damaged."""
    path = folder / FINGERPRINT_FILE
    if not path.is_file():
        return False
    recorded = read_json_object(path, "the settings this run started with")
    key = first_difference(recorded, fingerprint)
    if key is not None:
        old, new = _value(recorded, key), _value(fingerprint, key)
        raise InvalidSetting(
            f"{key}: {path} records {old!r} where this run has {new!r}; expected the settings the run "
            "started with to resume it (or a new hydra.run.dir, with ckpt_path= to start from its weights)"
        )
    return True


def claim_run_settings(folder: str | Path, cfg: DictConfig) -> None:
    """Check ``cfg`` against the fingerprint ``folder`` records, or record it there (the launch's first
    process writes it; the others only compare)."""
    folder = Path(folder)
    fingerprint = run_fingerprint(cfg)
    if not check_run_fingerprint(folder, fingerprint) and launch_is_main():
        write_json_atomically(folder / FINGERPRINT_FILE, fingerprint)


def _value(settings: dict, key: str) -> object:
    """The value at a dotted ``key`` (with ``[index]`` parts) of :func:`first_difference`."""
    value: object = settings
    for part in key.replace("[", ".[").split("."):
        if isinstance(value, list) and part.startswith("["):
            value = value[int(part[1:-1])]
        elif isinstance(value, dict):
            value = value.get(part, _ABSENT)
    return value


__all__ = [
    "FINGERPRINT_FILE",
    "RESUME_FREE_KEYS",
    "check_run_fingerprint",
    "claim_run_settings",
    "first_difference",
]

"""The Hydra callback that claims a console script's run folder (``hydra.run.dir``) before Hydra writes there.

Registered in ``conf/hydra/default.yaml``. At the start of a run, before Hydra saves ``.hydra/config.yaml``:
the run folder is locked for the whole run (:func:`~rca_lightning.utils.folder_lock.owned_folder`: a second
process stops at once), and when the folder records a fingerprint (a stage that trains there started
before) the new settings are compared with it
(:func:`~rca_lightning.utils.run_fingerprint.check_run_fingerprint`), so a refused resume leaves the run's
recorded config as it was. The stage itself records the fingerprint when it starts its work. Sweeps
(``-m``) give every job a folder of its own under a new sweep folder, and are not claimed here.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from rca_lightning.utils.errors import UserError, UserErrorExit
from rca_lightning.utils.folder_lock import owned_folder
from rca_lightning.utils.run_fingerprint import FINGERPRINT_FILE, check_run_fingerprint, run_fingerprint


class RunFolderClaim(Callback):
    """Hydra callback: lock ``hydra.run.dir`` for the run and check a resume's settings, before the run."""

    def __init__(self) -> None:
        self._held = ExitStack()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            run_dir = Path(str(config.hydra.run.dir))
            self._held.enter_context(owned_folder(run_dir, "hydra.run.dir"))
            if (run_dir / FINGERPRINT_FILE).is_file():  # a stage that trains here started before
                fingerprint = _task_fingerprint(config)
                if fingerprint is not None:
                    check_run_fingerprint(run_dir, fingerprint)
        except UserError as error:
            # Hydra turns a callback's exception into a warning and runs on; this one ends the script, in one
            # line (cli/console.py), as SettingsCheck's does.
            raise UserErrorExit(error) from error

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._held.close()


def _task_fingerprint(config: DictConfig) -> dict | None:
    """The fingerprint of the config the job will get (without ``hydra``), or None when it does not resolve
    before the job starts (the stage then compares when it records its fingerprint)."""
    task = copy.deepcopy(config)
    with open_dict(task):
        del task["hydra"]
    try:
        return run_fingerprint(task)
    except OmegaConfBaseException:
        return None


__all__ = ["RunFolderClaim"]

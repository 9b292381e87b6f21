"""How the console scripts end: a user error is one line on stderr and exit status 2.

A user error is a :class:`~rca_lightning.utils.errors.UserError` in an exception's chain of explicit causes,
or a settings error Hydra / OmegaConf raise while composing or resolving the configuration. It reaches the
console script's wrapper, :func:`run_console_script`, in one of two ways:

* raised in a job or in one of the project's Hydra callbacks, it leaves as
  :class:`~rca_lightning.utils.errors.UserErrorExit`, a ``SystemExit``, which Hydra lets pass (it catches
  ``Exception``: a job's own exception is a failed job, printed with an "Error executing job" line, and a
  callback's becomes a warning). Jobs get it from :func:`exits_on_user_error` on their task function; the
  callbacks (:class:`~rca_lightning.utils.settings_check.SettingsCheck`,
  :class:`~rca_lightning.utils.run_folder_claim.RunFolderClaim`) raise it themselves;
* raised while Hydra composes the configuration, before any job, it is handed on by Hydra: the wrapper sets
  ``HYDRA_FULL_ERROR=1``, Hydra's documented switch to leave an exception to the caller instead of printing
  it (the wrapper then prints it its own way).

The wrapper prints ``<script>: error: <message>`` and exits 2; anything else is a bug, printed with its
traceback (exit 1). ``HYDRA_FULL_ERROR=1`` set by the user shows every traceback, user errors included.
In a sweep (``-m``) a job's user error stays the job's failure, for the sweeper to count (Optuna goes on
with its next trial); when the sweeper re-raises it, Hydra names the job's overrides on a line of its own.

The cause chain is made of explicit causes only (``raise ... from error``: what Hydra's ``instantiate`` does
with a constructor's error, what the project does wherever it turns an error into a user error). An
exception raised while a user error was being handled, without ``from``, is a new failure: a bug, not that
user error.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rca_lightning.utils.error_messages import instantiated_key_of, one_line, user_error_in, with_key
from rca_lightning.utils.errors import UserErrorExit

FULL_ERROR_VARIABLE = "HYDRA_FULL_ERROR"
USER_ERROR_STATUS = 2
Result = TypeVar("Result")


def exits_on_user_error(task: Callable[[DictConfig], Result]) -> Callable[[DictConfig], Result]:
    """Decorate a ``@hydra.main`` task function (under the ``@hydra.main`` line): a user error it raises
    leaves it as :class:`UserErrorExit`, for the console script to print in one line (module docstring).

    In a sweep the error stays the job's failure; any other exception is left to Hydra as it is.
    """

    @functools.wraps(task)  # Hydra finds the task's module, and so its config path, through __wrapped__
    def job(cfg: DictConfig) -> Result:
        try:
            return task(cfg)
        except Exception as error:
            sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            if sweep or user_error_in(error) is None:
                raise
            raise UserErrorExit(error) from error

    return job


def run_console_script(main: Callable[[], object], script: str) -> None:
    """Run ``main`` (a ``@hydra.main`` function, or any function) as the console script ``script``: a user
    error is one line on stderr and exit status 2, a bug its traceback and exit status 1."""
    full_error = os.environ.get(FULL_ERROR_VARIABLE) == "1"
    os.environ[FULL_ERROR_VARIABLE] = "1"  # Hydra hands a composition error on instead of printing it
    try:
        main()
        return
    except UserErrorExit as stop:
        error = stop.error
    except Exception as raised:  # noqa: BLE001 - every exception ends the script here, each its own way
        error = raised
    finally:
        if not full_error:
            os.environ.pop(FULL_ERROR_VARIABLE, None)
    user_error = None if full_error else user_error_in(error)
    if user_error is None:  # a bug, or the user asked for every traceback
        traceback.print_exception(error)
        sys.exit(1)
    message = with_key(one_line(user_error), instantiated_key_of(error))
    # One write of the whole line: the ranks of a launch share stderr, their lines must not interleave.
    sys.stderr.write(f"{script}: error: {message}\n")
    sys.stderr.flush()
    sys.exit(USER_ERROR_STATUS)


__all__ = ["exits_on_user_error", "run_console_script"]

"""The exception type of user errors: bad settings, bad data, missing files.

Everything the project detects as the user's mistake raises a :class:`UserError`. The console scripts catch
it, print its one-line message and exit with status 2 (the traceback only with ``HYDRA_FULL_ERROR=1``).
They follow explicit causes only: a user error made from another exception is raised ``from`` it
(``raise InvalidData(...) from error``), and any exception raised while a user error is handled, without
``from``, is a bug (a traceback, exit status 1). Each concrete kind also derives from the built-in exception
a caller from Python would expect, so ``except ValueError`` / ``except FileNotFoundError`` keep working. A
stage stopped from outside (a worker process killed) is no mistake of the user's but ends the same way, in
one line saying what was kept: :class:`StageInterrupted`.
"""

from __future__ import annotations


class UserError(Exception):
    """A fault in what the user gave (a setting, a data file, a path), with a one-line message naming it."""


class InvalidSetting(UserError, ValueError):
    """A setting has a wrong value or type, or settings contradict each other."""


class InvalidData(UserError, ValueError):
    """A data file (image, mask, annotation, split list) is unreadable or disagrees with the others."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the user pointed at (or that a stage needs) does not exist."""


class StageInterrupted(UserError, RuntimeError):
    """A stage stopped by something outside it (a worker process killed, by the kernel's out-of-memory killer
    or a signal); what it wrote is kept and a rerun resumes."""


class FolderInUse(UserError, RuntimeError):
    """An output folder is held by another running process (one owner per folder)."""


class RanksOutOfStep(UserError, TimeoutError):
    """The processes of a torchrun / srun launch did not all reach a barrier in time."""


class UserErrorExit(SystemExit):
    """A user error on its way out of Hydra's hands to the console script, which prints its one line.

    Hydra reports an ``Exception`` a job raises as a failed job, and turns one a Hydra callback raises into a
    warning; a ``SystemExit`` passes both (they catch ``Exception``). Exit status 2.

    Args:
        error: the exception that holds the user error in its cause chain.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(2)
        self.error = error


__all__ = [
    "FolderInUse",
    "InvalidData",
    "InvalidSetting",
    "MissingInput",
    "RanksOutOfStep",
    "StageInterrupted",
    "UserError",
    "UserErrorExit",
]

"""The exception type of user errors: bad settings, bad data, missing files.

Everything the project detects as the user's mistake raises a :class:`UserError`. The console scripts catch
it, print its one-line message and exit with status 2 (the traceback only with ``HYDRA_FULL_ERROR=1``). Each
concrete kind also derives from the built-in exception a caller from Python would expect, so
``except ValueError`` / ``except FileNotFoundError`` keep working.
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


__all__ = ["InvalidData", "InvalidSetting", "MissingInput", "UserError"]

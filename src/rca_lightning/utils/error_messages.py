"""A user error as one line: which error of an exception's chain of explicit causes is the user's (a
:class:`~rca_lightning.utils.errors.UserError`, else a settings error of Hydra / OmegaConf) and its message on
one line, naming the setting."""

from __future__ import annotations

import re

from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    InstantiationException,
    OverrideParseException,
)
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, ValidationError

from rca_lightning.adapters.hydra import instantiated_key, listed_options
from rca_lightning.utils.errors import UserError

# Settings errors Hydra or OmegaConf raise while composing or resolving the configuration.
SETTINGS_ERRORS = (
    CompactHydraException,
    ConfigCompositionException,
    OverrideParseException,
    InterpolationResolutionError,
    MissingMandatoryValue,
    ValidationError,
)


def _cause_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from (``__cause__``), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__
    return chain


def user_error_in(error: BaseException) -> BaseException | None:
    """The user error behind ``error``: the first :class:`UserError` of its cause chain (explicit causes
    only), else a settings error of Hydra / OmegaConf in the chain (Hydra wraps a constructor's UserError in
    its own InstantiationException, which is itself a Hydra error: the UserError says what was wrong)."""
    chain = _cause_chain(error)
    return next((e for e in chain if isinstance(e, UserError)), None) or next(
        (e for e in chain if isinstance(e, SETTINGS_ERRORS)), None
    )


def instantiated_key_of(error: BaseException) -> str:
    """The config key of the object whose constructor raised ``error`` (Hydra's), or ""."""
    return next(filter(None, map(instantiated_key, _cause_chain(error))), "")


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line.

    A DataLoader worker's error arrives re-raised with the worker's traceback in its message; the line that
    counts is then the last one (``module.Type: message``), without the type. An OmegaConf or Hydra error
    says on later lines which key it is about; the first line carries the message and the key is kept. A
    constructor's error that Hydra's ``instantiate`` wrapped follows Hydra's line, with its type.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "Original Traceback" in str(error):
        return lines[-1].split(": ", 1)[-1]
    message = lines[0]
    key = getattr(error, "full_key", None) or instantiated_key(error)
    if key and key not in message:
        message = f"{key}: {message}"
    options = listed_options(error)
    if options:
        message = f"{message} (available: {', '.join(options)})"
    cause = error.__cause__
    if isinstance(error, ConfigCompositionException) and cause is not None and str(cause).strip():
        message = f"{message} {str(cause).strip().splitlines()[0]}"
    if isinstance(error, InstantiationException) and cause is not None:
        # A constructor's own error (not a UserError, which would have been found first): what it was.
        message = f"{message} {type(cause).__name__}: {one_line(cause)}"
    return message


def with_key(message: str, key: str) -> str:
    """``message`` with the dotted ``key`` of the object being built in front of the argument it names.

    Constructors name their argument (``head: expected one of ...``); Hydra knows the node (``model.net``).
    """
    if not key or message.startswith(f"{key}.") or re.match(r"[A-Za-z_][\w]*\.[\w.]*[:=]", message):
        return message  # the message already names its setting by its dotted key
    argument = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?=[:=])", message)
    if argument is None:
        return f"{key}: {message}"
    return f"{key}.{message}"


__all__ = ["SETTINGS_ERRORS", "instantiated_key_of", "one_line", "user_error_in", "with_key"]

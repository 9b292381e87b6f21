"""What Hydra 1.3 says only in the wording of its exception messages.

* :func:`instantiated_key`: ``hydra.utils.instantiate`` names the node whose ``_target_`` failed only in a
  ``full_key: <key>`` line of its ``InstantiationException``;
* :func:`listed_options`: a config-group choice that does not exist is refused with the group's options
  listed under ``Available options in '<group>':``, one per line, before ``Config search path:``.

Guarded by ``tests/test_adapters.py``, which makes Hydra raise both and fails naming this module when the
wording changes.
"""

from __future__ import annotations

import re

from hydra.errors import ConfigCompositionException, InstantiationException

_FULL_KEY = re.compile(r"^\s*full_key:\s*(\S+)", re.MULTILINE)
_OPTIONS_HEADER = "Available options"
_SEARCH_PATH_HEADER = "Config search path"


def instantiated_key(error: BaseException) -> str:
    """The dotted config key of the object whose constructor raised ``error`` (an ``InstantiationException``),
    or "" when ``error`` is none or names no key (the config root)."""
    if not isinstance(error, InstantiationException):
        return ""
    match = _FULL_KEY.search(str(error))
    return match.group(1) if match else ""


def listed_options(error: BaseException) -> list[str]:
    """The options Hydra lists in ``error`` (a ``ConfigCompositionException`` for a missing group choice),
    or [] when it lists none."""
    if not isinstance(error, ConfigCompositionException):
        return []
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith(_OPTIONS_HEADER)), None)
    if start is None:
        return []
    options = []
    for line in lines[start + 1 :]:
        if line.startswith(_SEARCH_PATH_HEADER) or line.endswith(":"):
            break
        options.append(line)
    return options


__all__ = ["instantiated_key", "listed_options"]

"""Reading the JSON files one run leaves for the next (``settings.json``, ``pipeline_state.json``): what is
damaged or foreign is refused in one line naming the file.

Python's ``json`` reads ``NaN`` and ``Infinity``, which no JSON writer of this project writes and no setting
may be: they are refused as they are read, like a file that is not JSON or whose top level is not an object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

from rca_lightning.utils.errors import InvalidData

# What a JSON value is called, by the Python type json reads it as.
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _refuse_non_finite(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a finite number")


def read_json_object(path: Path, expected: str) -> dict[str, Any]:
    """The JSON object in ``path``; InvalidData naming the file and ``expected`` (what should be there, e.g.
    "the settings rca-cams wrote") when it cannot be read, is not JSON, holds ``NaN`` / ``Infinity`` or is
    not an object."""
    try:
        content = json.loads(path.read_text(), parse_constant=_refuse_non_finite)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InvalidData(f"{path}: not readable as JSON ({reason}); expected {expected}") from error
    if not isinstance(content, dict):
        kind = _JSON_KINDS.get(type(content), "null")
        raise InvalidData(f"{path}: holds {kind}, expected {expected} (a JSON object)")
    return content


__all__ = ["read_json_object"]

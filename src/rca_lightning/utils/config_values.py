"""Values set on a composed config as they are, never parsed: a string is set literally (a path holding ``${``
is escaped for OmegaConf, so it is never interpolated, and one holding ``,`` or ``=`` is never parsed as an
override)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

# OmegaConf reads "${" as the start of an interpolation, "\${" as a literal "${", and a run of backslashes
# right before "${" as escaped backslashes.
_INTERPOLATION_START = re.compile(r"(\\*)\$\{")


def literal(value: object) -> object:
    """``value`` as OmegaConf keeps it literally: every ``${`` of a string escaped (a path is never
    interpolated); other values unchanged."""
    if not isinstance(value, str):
        return value
    return _INTERPOLATION_START.sub(lambda match: match.group(1) * 2 + "\\${", value)


def set_config_values(cfg: DictConfig, values: Mapping[str, object]) -> None:
    """Set ``values`` (dotted key -> plain value) on the composed ``cfg``, strings literally
    (:func:`literal`); each replaces what the key held (no merge). A key the config lacks is a bug."""
    for key, value in values.items():
        OmegaConf.update(cfg, key, literal(value), merge=False)


__all__ = ["literal", "set_config_values"]

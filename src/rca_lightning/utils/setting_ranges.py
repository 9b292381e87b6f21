"""Range checks of the numbers that size work (a walk's steps, CRF iterations, scales, thresholds).

The override check (:mod:`rca_lightning.utils.settings_check`) knows a setting's type; what the number may be
is known where it is used, so the class or function that reads it calls :func:`number_in_range` /
:func:`numbers_in_range`, which return the value or raise
:class:`~rca_lightning.utils.errors.InvalidSetting` in one line naming the setting and the range::

    exp_times: expected an integer in [0, 16], got -1

A non-finite number (``nan``, ``inf``: YAML's ``.nan`` and JSON's ``NaN`` are read as such) is outside every
range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from rca_lightning.utils.errors import InvalidSetting

# The largest factor an image is resized by (TTA scales, the boundary network's image_scale): a 500 px VOC
# image becomes 2000 px; beyond that, memory, not accuracy, grows.
MAX_SCALE = 4.0
# The most test-time scales one inference runs (each is a forward pass of the whole batch).
MAX_SCALE_COUNT = 16
# The largest disc of pixel pairs at stride 4 (random walk, boundary training): about pi r^2 pairs per pixel.
MAX_RADIUS = 32
# The most images one inference batch holds, and the most loader / CRF worker processes of one stage.
MAX_BATCH_SIZE = 1024
MAX_WORKERS = 256


def _range_words(minimum: float | None, maximum: float | None, above_minimum: bool) -> str:
    """The range in interval notation: ``in [0, 16]``, ``in (0, 4]``, ``>= 0``, ``> 0``."""
    if minimum is None and maximum is None:
        return ""
    if maximum is None:
        return f" {'>' if above_minimum else '>='} {minimum:g}"
    if minimum is None:
        return f" <= {maximum:g}"
    return f" in {'(' if above_minimum else '['}{minimum:g}, {maximum:g}]"


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_in_range(
    value: Any, minimum: float | None = None, maximum: float | None = None, above_minimum: bool = False
) -> bool:
    """Whether ``value`` is a finite number (not a boolean) within the bounds (as :func:`number_in_range`)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        return False
    if minimum is not None and (value <= minimum if above_minimum else value < minimum):
        return False
    return maximum is None or value <= maximum


def number_in_range(
    setting: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
    above_minimum: bool = False,
) -> Any:
    """``value`` when it is a finite number (an integer with ``integer``) within the bounds; else
    InvalidSetting naming ``setting``.

    Args:
        setting: the setting's name as the user writes it (``exp_times``, ``refine.radius``).
        value: what was given.
        minimum, maximum: inclusive bounds (None: unbounded on that side).
        integer: only integers (not ``true``, not ``1.5``).
        above_minimum: ``minimum`` itself is excluded.
    """
    if (integer and not _is_integer(value)) or not is_in_range(value, minimum, maximum, above_minimum):
        kind = "an integer" if integer else "a finite number"
        raise InvalidSetting(
            f"{setting}: expected {kind}{_range_words(minimum, maximum, above_minimum)}, got {value!r}"
        )
    return value


def numbers_in_range(
    setting: str,
    values: Any,
    max_count: int,
    minimum: float | None = None,
    maximum: float | None = None,
    above_minimum: bool = False,
) -> tuple[float, ...]:
    """``values`` as a tuple of floats when they are 1 to ``max_count`` finite numbers within the bounds;
    else InvalidSetting naming ``setting`` (see :func:`number_in_range`)."""
    listed = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else None
    if (
        listed is None
        or not 1 <= len(listed) <= max_count
        or not all(is_in_range(value, minimum, maximum, above_minimum) for value in listed)
    ):
        shown = listed if listed is not None else values
        bounds = _range_words(minimum, maximum, above_minimum)
        raise InvalidSetting(f"{setting}: expected 1 to {max_count} finite numbers{bounds}, got {shown!r}")
    return tuple(float(value) for value in listed)


__all__ = ["MAX_RADIUS", "MAX_SCALE", "MAX_SCALE_COUNT", "is_in_range", "number_in_range", "numbers_in_range"]

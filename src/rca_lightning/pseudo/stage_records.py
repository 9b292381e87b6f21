"""What one stage records for the next in a file, read as typed values against a fixed schema.

A run folder is data: a resumed pipeline reads what its finished stages recorded (the method's pseudo-mask
settings and the CAM views in ``cams/cams.json``, the seeds' best threshold in ``cam_eval/eval.json``), and
those files may come from someone else. Each value is checked here against its type and range; anything else
(an unknown key, a wrong type, NaN or infinity, a value out of range, a file that is not a JSON object) is an
:class:`~rca_lightning.utils.errors.InvalidData` naming the file, the key and what was expected.

The values reach the next stage's composed config as typed values
(:func:`~rca_lightning.utils.config_values.set_config_values`), never as Hydra override strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rca_lightning.pseudo.seed_sources import SEED_KINDS
from rca_lightning.utils.errors import InvalidData, InvalidSetting
from rca_lightning.utils.setting_ranges import MAX_SCALE, MAX_SCALE_COUNT, number_in_range, numbers_in_range
from rca_lightning.utils.state_files import read_json_object

T = TypeVar("T")

PSEUDO_MASK_SETTINGS = {
    "background_threshold": "a number in [0, 1] (a constant background score)",
    "crf": "true or false (false: no CRF)",
}
"""The pseudo-mask settings a method may record (``pseudo_mask_settings``): name -> what it takes."""


@dataclass(frozen=True)
class CAMsRecord:
    """What ``rca-cams`` recorded in ``cams.json`` for the stages after it.

    Attributes:
        checkpoint: the classifier checkpoint the CAMs came from.
        checkpoint_selection: how that checkpoint was chosen (``last``, ...).
        seeds: what the CAM files hold (one of ``SEED_KINDS``).
        scales: the test-time scales of the CAMs (None when not recorded).
        flip: whether the flipped image was averaged in (None when not recorded).
        pseudo_mask_settings: the method's pseudo-mask settings (:data:`PSEUDO_MASK_SETTINGS`).
    """

    checkpoint: str
    checkpoint_selection: str = "last"
    seeds: str = "cams"
    scales: tuple[float, ...] | None = None
    flip: bool | None = None
    pseudo_mask_settings: dict[str, float | bool] = field(default_factory=dict)


def _checked(path: Path, check: Callable[[], T]) -> T:
    """``check()``, its InvalidSetting (a value out of its range) turned into InvalidData naming ``path``."""
    try:
        return check()
    except InvalidSetting as error:
        raise InvalidData(f"{path}: {error}") from error


def _unit_number(path: Path, key: str, value: object) -> float:
    return float(_checked(path, lambda: number_in_range(key, value, 0.0, 1.0)))


def _string(path: Path, key: str, value: object, choices: tuple[str, ...] = ()) -> str:
    if not isinstance(value, str) or (choices and value not in choices):
        expected = f"one of {list(choices)}" if choices else "a string"
        raise InvalidData(f"{path}: {key}: expected {expected}, got {value!r}")
    return value


def _pseudo_mask_settings(path: Path, settings: object) -> dict[str, float | bool]:
    if not isinstance(settings, dict):
        expected = f"a mapping of {list(PSEUDO_MASK_SETTINGS)}"
        raise InvalidData(f"{path}: pseudo_mask_settings: expected {expected}, got {settings!r}")
    checked: dict[str, float | bool] = {}
    for name, value in settings.items():
        key = f"pseudo_mask_settings.{name}"
        if name not in PSEUDO_MASK_SETTINGS:
            raise InvalidData(f"{path}: {key}: unknown setting; expected one of {list(PSEUDO_MASK_SETTINGS)}")
        if name == "crf":
            if not isinstance(value, bool):
                raise InvalidData(f"{path}: {key}: expected {PSEUDO_MASK_SETTINGS[name]}, got {value!r}")
            checked[name] = value
        else:
            checked[name] = _unit_number(path, key, value)
    return checked


def _scales(scales: object) -> tuple[float, ...]:
    return numbers_in_range("scales", scales, MAX_SCALE_COUNT, 0.0, MAX_SCALE, above_minimum=True)


def read_cams_record(path: Path) -> CAMsRecord:
    """``cams.json`` of a cams stage, its hand-off values checked (:class:`CAMsRecord`).

    Raises:
        InvalidData: the file is not a JSON object, or a value is missing (``checkpoint``), of a wrong type or
            out of range; ``pseudo_mask_overrides`` (override strings, never applied) is refused too.
    """
    record = read_json_object(path, "the record rca-cams wrote")
    if "pseudo_mask_overrides" in record:
        raise InvalidData(
            f"{path}: pseudo_mask_overrides: override strings are not applied; expected pseudo_mask_settings "
            f"(a mapping of {list(PSEUDO_MASK_SETTINGS)}), as rca-cams writes it now"
        )
    scales, flip = record.get("scales"), record.get("flip")
    selection = record.get("checkpoint_selection", "last")
    if flip is not None and not isinstance(flip, bool):
        raise InvalidData(f"{path}: flip: expected true or false, got {flip!r}")
    return CAMsRecord(
        checkpoint=_string(path, "checkpoint", record.get("checkpoint")),
        checkpoint_selection=_string(path, "checkpoint_selection", selection),
        seeds=_string(path, "seeds", record.get("seeds", "cams"), SEED_KINDS),
        scales=None if scales is None else _checked(path, lambda: _scales(scales)),
        flip=flip,
        pseudo_mask_settings=_pseudo_mask_settings(path, record.get("pseudo_mask_settings", {})),
    )


def read_best_cam_threshold(path: Path) -> float:
    """The seeds' best background threshold in ``cam_eval``'s ``eval.json`` (``cams.best_threshold``)."""
    cams = read_json_object(path, "the record rca-eval wrote").get("cams")
    if not isinstance(cams, dict) or "best_threshold" not in cams:
        raise InvalidData(f"{path}: cams.best_threshold: expected the CAM evaluation's record, got none")
    return _unit_number(path, "cams.best_threshold", cams["best_threshold"])


def pseudo_mask_config_values(settings: Mapping[str, float | bool]) -> dict[str, float | None]:
    """The ``rca-pseudo`` config values of a method's pseudo-mask settings (``crf: false`` switches the
    refiner's CRF off)."""
    values: dict[str, float | None] = {}
    if "background_threshold" in settings:
        values["refine.background_threshold"] = float(settings["background_threshold"])
    if settings.get("crf") is False:
        values["refine.crf"] = None
    return values


__all__ = [
    "PSEUDO_MASK_SETTINGS",
    "CAMsRecord",
    "pseudo_mask_config_values",
    "read_best_cam_threshold",
    "read_cams_record",
]

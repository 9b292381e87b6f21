"""A stage of the pipeline as a declaration: what it runs, what it reads, what it is given.

The runner knows no stage by name: it orders, checks, composes and runs what the declarations say
(:mod:`rca_lightning.pipeline.plan`, :mod:`rca_lightning.pipeline.runner`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig, ListConfig

from rca_lightning.pipeline.settings import RunSettings
from rca_lightning.utils.errors import InvalidSetting


@dataclass(frozen=True)
class StageArguments:
    """What a stage's config is given before anything runs.

    Attributes:
        overrides: what the config is composed with: config-group choices and the user's own command-line
            overrides (text the user wrote, never a value read from a file or a path).
        values: dotted key -> plain value, set on the composed config (paths, settings); an override of the
            same key, or of a key under it, from the user wins.
    """

    overrides: list[str] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    """Values of a stage's config that an earlier stage records in its folder: declared with the plan (their
    keys are checked against the composed config before anything runs), read once ``source`` finished, just
    before the stage runs, and set as typed values (:mod:`rca_lightning.pseudo.stage_records`).

    Attributes:
        source: the stage whose folder holds them (one of the reading stage's inputs).
        keys: the dotted keys of the reading stage's config that ``read`` may set.
        read: the run's settings -> {key: value}, from ``source``'s recorded files.
    """

    source: str
    keys: tuple[str, ...]
    read: Callable[[RunSettings], dict[str, object]]


def _always(settings: RunSettings) -> bool:
    return True


def _no_records(settings: RunSettings) -> tuple[Recorded, ...]:
    return ()


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: the stage's name (its folder in the run, its ``stages.<name>`` entry).
        config_name: the config it is composed from (that of its console script).
        done_file: the file in its folder that marks it finished.
        run: its task, from its composed config.
        inputs: the run's settings -> the stages whose outputs it reads (they run first).
        arguments: the run's settings -> what its config is composed with and given.
        recorded: the run's settings -> what it reads from its inputs' records (:class:`Recorded`).
        runs_when: the run's settings -> whether the stage is part of the run at all.
        provided_by: a ``pipeline.yaml`` key naming a finished folder that stands in for this stage's outputs
            (the stage then does not run).
        check: a check of the composed config before anything runs (InvalidSetting), or None.
    """

    name: str
    config_name: str
    done_file: str
    run: Callable[[DictConfig], object]
    inputs: Callable[[RunSettings], tuple[str, ...]]
    arguments: Callable[[RunSettings], StageArguments]
    recorded: Callable[[RunSettings], tuple[Recorded, ...]] = _no_records
    runs_when: Callable[[RunSettings], bool] = _always
    provided_by: str | None = None
    check: Callable[[RunSettings, DictConfig], None] | None = None


def check_stage_entries(stages: object, names: Sequence[str]) -> None:
    """InvalidSetting unless ``stages`` maps stage ``names`` to ``{enabled: bool, overrides: [str]}``."""
    if not isinstance(stages, DictConfig):
        raise InvalidSetting(
            f"stages: expected a mapping of stage names {list(names)} to settings, got {stages!r}"
        )
    for name, entry in stages.items():
        if name not in names:
            raise InvalidSetting(f"stages.{name}: unknown stage; expected one of {list(names)}")
        if not isinstance(entry, DictConfig) or set(entry) != {"enabled", "overrides"}:
            raise InvalidSetting(
                f"stages.{name}: expected enabled and overrides (stages.{name}.enabled=false, "
                f"'stages.{name}.overrides=[\"key=value\"]'), got {entry!r}"
            )
        if not isinstance(entry.enabled, bool):
            raise InvalidSetting(f"stages.{name}.enabled: expected true or false, got {entry.enabled!r}")
        overrides = entry.overrides
        if not isinstance(overrides, ListConfig) or not all(isinstance(o, str) for o in overrides):
            raise InvalidSetting(
                f"stages.{name}.overrides: expected a list of overrides like ['trainer.max_epochs=2'], "
                f"got {overrides!r}"
            )


__all__ = ["Recorded", "Stage", "StageArguments", "check_stage_entries"]

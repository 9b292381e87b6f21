"""The pipeline's stage table: the row type (:class:`Stage`), what the pipeline gives a stage
(:class:`StageArguments`) and the shape of the ``stages:`` settings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from omegaconf import DictConfig, ListConfig

from rca_lightning.utils.errors import InvalidSetting

if TYPE_CHECKING:
    from rca_lightning.cli.pipeline import Pipeline


@dataclass(frozen=True)
class StageArguments:
    """What the pipeline gives one stage's config.

    Attributes:
        overrides: what the config is composed with: config-group choices and the user's own command-line
            overrides (text the user wrote, never a value read from a file or a path).
        values: dotted key -> plain value, set on the composed config (paths, the values earlier stages
            recorded: :mod:`rca_lightning.pipeline_handoffs`); an override of the same key, or of a key under
            it, from the user wins.
    """

    overrides: list[str] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: the config it is composed from, the file that marks it finished, what it
    runs, the stages whose outputs it reads, and what the pipeline gives its config."""

    name: str
    config_name: str
    done_file: str
    run: Callable[[DictConfig], tuple[dict, object]]
    needs: tuple[str, ...] = ()
    arguments: Callable[[Pipeline], StageArguments] = lambda pipeline: StageArguments()


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

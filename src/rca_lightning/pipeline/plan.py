"""The plan of one run, made before anything runs: which declared stages take part, that each finds what it
reads, and each stage's config composed and checked once; the runner runs exactly these configs, setting
only the values their stages declared as recorded by an earlier stage (:class:`Recorded`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rca_lightning.pipeline.settings import RunSettings, override_key
from rca_lightning.pipeline.stage import Recorded, Stage, check_stage_entries
from rca_lightning.utils.config_values import literal, set_config_values
from rca_lightning.utils.error_messages import one_line
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from rca_lightning.utils.settings_check import check_overrides

_ABSENT = object()


def _unless_overridden(values: dict[str, object], overrides: Sequence[str]) -> dict[str, object]:
    """``values`` less those of a key the overrides set themselves (or set a key under): the user's win."""
    keys = [override_key(override) for override in overrides]
    return {
        key: value
        for key, value in values.items()
        if not any(given == key or given.startswith(f"{key}.") for given in keys)
    }


@dataclass
class PlannedStage:
    """A stage of the plan.

    Attributes:
        stage: its declaration.
        folder: its folder in the run (or the folder that stands in for it).
        overrides: what its config is composed with: the pipeline's, then its ``stages.<name>.overrides``.
        config: its composed config with the values known before anything runs.
        recorded: what it reads from earlier stages' records once they finished.
    """

    stage: Stage
    folder: Path
    overrides: list[str]
    config: DictConfig
    recorded: tuple[Recorded, ...]

    def config_to_run(self, settings: RunSettings) -> DictConfig:
        """The checked config with the recorded values set: read now (every source finished), less those the
        user's overrides set."""
        values: dict[str, object] = {}
        for record in self.recorded:
            values |= {key: value for key, value in record.read(settings).items() if key in record.keys}
        set_config_values(self.config, _unless_overridden(values, self.overrides))
        return self.config

    def save(self, cfg: DictConfig) -> None:
        """Save ``cfg`` where the stage's console script would leave it, so that the folder stands alone
        (``.hydra/config.yaml``: every value; ``.hydra/overrides.yaml``: what it was composed with)."""
        hydra_dir = self.folder / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, hydra_dir / "config.yaml")
        OmegaConf.save(OmegaConf.create(self.overrides), hydra_dir / "overrides.yaml")


class Plan:
    """The declared ``stages`` of the run described by ``settings``, checked and composed.

    Composing needs Hydra's config search path (inside ``@hydra.main``, or ``initialize_config_dir``).

    Raises:
        InvalidSetting: a ``stages`` entry, a stage's overrides or a combination of settings is refused,
            naming the setting (``stages.<name>``, ``seeds``, ...).
        MissingInput: a folder given to stand in for a stage is not a finished one.
    """

    def __init__(self, settings: RunSettings, stages: Sequence[Stage]) -> None:
        settings.check()
        self.settings = settings
        self.stages = tuple(stages)
        names = [stage.name for stage in self.stages]
        check_stage_entries(settings.cfg.get("stages"), names)
        for stage in self.stages:
            given = settings.provided.get(stage.name)
            if given is not None and not (given / stage.done_file).is_file():
                raise MissingInput(
                    f"{stage.provided_by}={given}: {given / stage.done_file} not found; expected a "
                    f"finished {stage.config_name} run"
                )
        self.enabled = [stage for stage in self.stages if self._enabled(stage)]
        self._check_inputs(names)
        self.to_run = [self.compose(stage) for stage in self.enabled if not self.is_done(stage)]

    def _enabled(self, stage: Stage) -> bool:
        return bool(self.settings.cfg.stages[stage.name].enabled) and stage.runs_when(self.settings)

    def is_done(self, stage: Stage) -> bool:
        """Whether ``stage`` finished (its done-file is there) or a given folder stands in for it."""
        return (
            stage.name in self.settings.provided
            or (self.settings.folder(stage.name) / stage.done_file).is_file()
        )

    def _check_inputs(self, names: list[str]) -> None:
        by_name = {stage.name: stage for stage in self.stages}
        for stage in self.enabled:
            inputs = stage.inputs(self.settings)
            for record in stage.recorded(self.settings):
                if record.source not in inputs:
                    raise ValueError(f"stage {stage.name}: records of {record.source}, not one of its inputs")
            for name in inputs:
                if names.index(name) >= names.index(stage.name):
                    raise ValueError(f"stage {stage.name}: its input {name} is declared after it")
                needed = by_name[name]
                if not self.is_done(stage) and needed not in self.enabled and not self.is_done(needed):
                    raise InvalidSetting(
                        f"stages.{name}.enabled=false: stage {stage.name} reads its output; expected "
                        f"stages.{stage.name}.enabled=false too (or a finished {name} in this run)"
                    )

    def compose(self, stage: Stage) -> PlannedStage:
        """``stage``'s config composed with the pipeline's overrides and its own, checked (their values
        against the types of the settings they change, the keys its records will set), with the values known
        now set literally and its outputs in its folder."""
        arguments = stage.arguments(self.settings)
        own = [*self.settings.cfg.stages[stage.name].overrides]
        overrides = [*arguments.overrides, *own]
        source = f"stages.{stage.name}"
        try:
            cfg = compose(stage.config_name, overrides=overrides)
        except (HydraException, OmegaConfBaseException) as error:
            raise InvalidSetting(f"{source}: {one_line(error)}") from error
        check_overrides(stage.config_name, overrides, own, source=source)
        folder = self.settings.folder(stage.name)
        with open_dict(cfg):
            cfg.paths.output_dir = literal(str(folder))
        set_config_values(cfg, _unless_overridden(arguments.values, overrides))
        recorded = stage.recorded(self.settings)
        for key in (key for record in recorded for key in record.keys):
            if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
                raise InvalidSetting(f"{source}: the config has no {key}, which an earlier stage sets")
        if stage.check is not None:
            stage.check(self.settings, cfg)
        return PlannedStage(stage, folder, overrides, cfg, recorded)

    def configs(self) -> dict[str, DictConfig]:
        """Every enabled stage's composed config (finished or not), but those a given folder stands in for."""
        return {
            stage.name: self.compose(stage).config
            for stage in self.enabled
            if stage.name not in self.settings.provided
        }


__all__ = ["Plan", "PlannedStage"]

"""The one wrapper every Hydra console script is made with: ``@hydra.main`` over the script's config, its task
called, user errors in one line with exit status 2 (:mod:`rca_lightning.cli.console`), and the value of
``optimized_metric`` returned to a sweeper."""

from __future__ import annotations

from collections.abc import Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rca_lightning.cli.console import exits_on_user_error, run_console_script
from rca_lightning.tasks.stage_settings import swept_value
from rca_lightning.utils.quiet import silence_known_noise
from rca_lightning.utils.resolvers import register_resolvers

# The packaged configs, relative to this file (Hydra resolves config_path from the task function's module).
CONFIG_PATH = "../conf"


def hydra_console_script(
    script: str, config_name: str, task: Callable[[DictConfig], object]
) -> Callable[[], None]:
    """The console script ``script``: ``task`` run on ``config_name`` composed from the command line.

    ``task`` returns what it measured (a mapping, or a tuple whose first item is one, or None); a job
    returns its ``optimized_metric`` entry to a sweeper (:func:`swept_value`).
    """
    register_resolvers()

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
    @exits_on_user_error
    def job(cfg: DictConfig) -> float | None:
        silence_known_noise()
        result = task(cfg)
        values = result[0] if isinstance(result, tuple) else result
        if not values:
            return None
        return swept_value(cfg, values, multirun=HydraConfig.get().mode == RunMode.MULTIRUN)

    def main() -> None:
        run_console_script(job, script)

    return main


__all__ = ["hydra_console_script"]

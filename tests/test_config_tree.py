"""The config tree printed by ``print_config=true``: values resolved where they can be, else as written."""

from omegaconf import OmegaConf
from rich.console import Console

from rca_lightning.utils.config_tree import config_tree


def rendered(config: dict) -> str:
    console = Console(record=True, width=100, color_system=None, force_jupyter=False)
    console.print(config_tree({"stage": OmegaConf.create(config)}))
    return console.export_text()


def test_a_value_only_a_job_resolves_or_a_missing_one_is_shown_as_written():
    text = rendered(
        {
            "epochs": 3,
            "copy": "${epochs}",
            "later": "${hydra:runtime.output_dir}",
            "required": "???",
            "paths": {"run": "${nowhere.dir}/run", "depth": "${epochs}"},
        }
    )
    assert "copy: 3" in text
    assert "later: ${hydra:runtime.output_dir}" in text
    assert "required: ???" in text
    assert "run: ${nowhere.dir}/run" in text and "depth: ${epochs}" in text  # the branch as written

"""The upstream behaviour each adapter (``rca_lightning.adapters``) relies on: made to happen for real, so a
change upstream fails here, naming the adapter."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rca_lightning.adapters.hydra import instantiated_key, listed_options

HYDRA_ADAPTER = "rca_lightning/adapters/hydra.py"


class Refuses:
    def __init__(self, width: int) -> None:
        raise ValueError(f"width: expected 1, got {width}")


def test_hydra_names_the_key_of_a_failed_target_in_its_message():
    config = OmegaConf.create({"model": {"net": {"_target_": f"{__name__}.Refuses", "width": 2}}})
    with pytest.raises(InstantiationException) as caught:
        instantiate(config)
    assert instantiated_key(caught.value) == "model.net", (
        f"{HYDRA_ADAPTER}: Hydra no longer ends an InstantiationException with 'full_key: model.net': "
        f"{str(caught.value)!r}"
    )
    assert instantiated_key(ValueError("full_key: model.net")) == ""


def test_hydra_lists_a_groups_options_when_a_choice_is_missing(tmp_path):
    (tmp_path / "main.yaml").write_text("defaults:\n  - model: small\n")
    (tmp_path / "model").mkdir()
    for option in ("small", "large"):
        (tmp_path / "model" / f"{option}.yaml").write_text("depth: 2\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as caught:
            compose("main", overrides=["model=medium"])
    assert listed_options(caught.value) == ["large", "small"], (
        f"{HYDRA_ADAPTER}: Hydra no longer lists a group's options under 'Available options in ...:': "
        f"{str(caught.value)!r}"
    )
    assert listed_options(ValueError("Available options in 'model':\n\tsmall")) == []

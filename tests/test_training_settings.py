"""The training settings RCA and EPS share: one dataclass behind the flat ``model.*`` keys, checked by type
before a run starts, recorded as plain hyper-parameters."""

from dataclasses import asdict, fields
from functools import partial

import pytest
import torch
from hydra import initialize_config_dir
from hydra.utils import instantiate

from rca_lightning import RCALitModule
from rca_lightning.lit.eps_module import EPSTrainingSettings
from rca_lightning.lit.training_settings import TrainingSettings
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.resolvers import register_resolvers
from rca_lightning.utils.settings_check import check_overrides
from tests.conftest import CONFIG_DIR
from tests.console_runs import run_in_process

METHODS = ("rca", "eps")  # the two classes that share the settings


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.contrast_weight=abc", "model.contrast_weight: expected a number (default 0.01), got 'abc'"),
        ("model.use_contrast=1", "model.use_contrast: expected true or false (default "),
        ("model.lr_milestone_epochs=[a]", "model.lr_milestone_epochs: expected a list (items: an integer)"),
        ("model.lr_multipliers={new_weight:x}", "model.lr_multipliers: expected a mapping or null"),
        ("model.optimizer.lr=abc", "model.optimizer.lr: expected a number (default 0.001), got 'abc'"),
        ("+model.foo=1", "Module has no argument 'foo' (given as +model.foo)"),
    ],
)
def test_a_shared_setting_of_the_wrong_type_is_refused_for_every_method(method, override, message):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        check_overrides("train", [f"model={method}", "model.contrast_weight=0.02", "model.lr_gamma=0.5"])
        with pytest.raises(InvalidSetting) as refused:
            check_overrides("train", [f"model={method}", override])
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("method", METHODS)
def test_rca_train_ends_in_one_line_on_a_wrong_shared_setting(tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)  # the installed entry point, run in this process from the test's folder
    result = run_in_process(
        "rca-train",
        f"model={method}",
        "model.contrast_weight=abc",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines == ["rca-train: error: model.contrast_weight: expected a number (default 0.01), got 'abc'"]


def test_the_config_keys_fill_the_settings_and_are_plain_hyperparameters(compose_train_config, tmp_path):
    module = instantiate(
        compose_train_config("model=eps", "model.contrast_weight=0.02", "model.pseudo_crf=true").model
    )
    assert isinstance(module.settings, EPSTrainingSettings)
    assert module.settings.contrast_weight == 0.02 and module.settings.pseudo_crf is True
    assert module.settings.lr_schedule == "step"  # from conf/model/rca.yaml, through eps.yaml
    hparams = dict(module.hparams)
    assert hparams == {"class_names": list(module.class_names), **asdict(module.settings)}
    torch.save(hparams, tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True) == hparams


def test_python_callers_get_every_default_and_unknown_names_are_refused(compose_train_config):
    config = compose_train_config().model
    arguments = {
        "net": instantiate(config.net),
        "memory_bank": instantiate(config.memory_bank),
        "contrast_loss": instantiate(config.contrast_loss),
        "optimizer": partial(torch.optim.SGD, lr=0.1),
        "class_names": list(config.class_names),
    }
    module = RCALitModule(**arguments, lr_gamma=0.5)
    assert module.settings == TrainingSettings(lr_gamma=0.5)
    assert set(module.hparams) == {"class_names"} | {field.name for field in fields(TrainingSettings)}
    with pytest.raises(TypeError, match="contrast_wieght"):
        RCALitModule(**arguments, contrast_wieght=0.5)
    with pytest.raises(InvalidSetting, match="aggregation_lr: expected one of"):
        RCALitModule(**arguments, aggregation_lr="extra")

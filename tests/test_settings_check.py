"""Overrides checked against the types of the settings they change: the checker on a small config of its own,
the packaged experiments, and the console scripts ending in one line before anything is read."""

import time
from pathlib import Path

import pytest
from hydra import initialize_config_dir

from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.resolvers import register_resolvers
from rca_lightning.utils.settings_check import check_overrides
from tests.conftest import CONFIG_DIR, TINY_DATA_OVERRIDES, TINY_MODEL_OVERRIDES
from tests.console_runs import ScriptResult, run_in_process


class Net:
    """What ``net`` builds: annotations wider than the defaults' types."""

    def __init__(
        self,
        width: int,
        devices: int | str | list[int] = 1,
        scale: float | None = None,
        limit: int | None = None,
        channels: int = 8,
    ) -> None:
        self.width, self.devices, self.scale, self.limit, self.channels = (
            width,
            devices,
            scale,
            limit,
            channels,
        )


MAIN = f"""
defaults:
  - _self_
  - model: small

count: 3
rate: 0.5
flag: true
name: run
sizes: [1, 2]
options: {{a: 1}}
anything: null
required: ???
copy: ${{count}}
broken: ${{nowhere.key}}
net:
  _target_: {__name__}.Net
  width: 4
  devices: 1
  limit: null
  channels: null  # the config's own meaning: the annotation does not take it, so it is not used
"""
GROUP_OPTIONS = {
    "small": "depth: 2\nblock:\n  channels: 8\n",
    "other": "depth: deep\nblock:\n  channels: 8\n",
}


@pytest.fixture
def check(tmp_path):
    """``check(*overrides)``: :func:`check_overrides` of ``main.yaml`` (a config of this test) in Hydra."""
    (tmp_path / "main.yaml").write_text(MAIN)
    (tmp_path / "model").mkdir()
    for option, text in GROUP_OPTIONS.items():
        (tmp_path / "model" / f"{option}.yaml").write_text(text)

    def _check(*overrides: str, **kwargs) -> None:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            check_overrides("main", list(overrides), **kwargs)

    return _check


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("count=abc", "count: expected an integer (default 3), got 'abc'"),
        ("count=1.5", "count: expected an integer (default 3), got 1.5"),
        ("count=true", "count: expected an integer (default 3), got true"),
        ("rate=abc", "rate: expected a number (default 0.5), got 'abc'"),
        ("rate=false", "rate: expected a number (default 0.5), got false"),
        ("flag=1", "flag: expected true or false (default true), got 1"),
        ("name=[a]", "name: expected a string (default 'run'), got ['a']"),
        ("name=true", "name: expected a string (default 'run'), got true"),
        ("sizes=3", "sizes: expected a list (default [1, 2]), got 3"),
        ("options=3", "options: expected a mapping (default {'a': 1}), got 3"),
        ("copy=abc", "copy: expected an integer (default 3), got 'abc'"),
        ("count=${rate}", "count: expected an integer (default 3), got 0.5"),
        ("model.depth=x", "model.depth: expected an integer (default 2), got 'x'"),
        ("model.block.channels=[8]", "model.block.channels: expected an integer (default 8), got [8]"),
        ("rate=nan", "rate: expected finite numbers (no nan or inf), got nan"),
        ("rate=-inf", "rate: expected finite numbers (no nan or inf), got -inf"),
        ("sizes=[1,inf]", "sizes: expected finite numbers (no nan or inf), got [1, inf]"),
        ("options={a: nan}", "options: expected finite numbers (no nan or inf), got {'a': nan}"),
        ("anything=nan", "anything: expected finite numbers (no nan or inf), got nan"),
    ],
)
def test_a_value_of_another_type_than_the_default_is_refused_in_one_line_naming_the_key(
    check, override, message
):
    with pytest.raises(InvalidSetting) as caught:
        check(override)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "override",
    [
        "count=4",
        "count=-1",
        "count=null",  # null turns a setting off
        "rate=1",
        "rate=1e-3",
        "flag=false",
        "name=7",  # Hydra reads a name or folder made of digits as a number
        "name='7'",
        "sizes=[]",
        "options={a: 2}",
        "anything=[1, 2]",
        "required=5",
        "broken=abc",  # an interpolation that does not resolve: nothing to compare with
        "copy=7",
        "count=${sizes.0}",  # the user's interpolation is judged by what it resolves to
        "count=${nowhere.key}",  # or not at all when it does not resolve here
        "+options.b=2",  # added under a node that builds nothing
        "~name",
    ],
)
def test_a_value_of_the_default_type_or_an_untyped_setting_passes(check, override):
    check(override)


def test_the_group_choices_of_the_overrides_make_the_reference(check):
    check("model=other", "model.depth=deeper")  # model=small's depth is an integer
    with pytest.raises(
        InvalidSetting, match=r"model\.depth: expected a string \(default 'deep'\), got \[1\]"
    ):
        check("model=other", "model.depth=[1]")


def test_a_target_argument_takes_what_its_annotation_takes(check):
    check("net.devices=auto", "net.devices=[0,1]", "+net.scale=0.5")
    check("++net.scale=null")
    with pytest.raises(InvalidSetting) as caught:
        check("net.devices=1.5")
    assert str(caught.value) == (
        "net.devices: expected an integer, a string or a list (items: an integer) (default 1), got 1.5"
    )
    with pytest.raises(InvalidSetting, match=r"^net\.width: expected an integer \(default 4\), got null$"):
        check("net.width=null")
    with pytest.raises(InvalidSetting, match=r"^net\.scale: expected a number or null, got 'big'$"):
        check("+net.scale=big")
    check("net.limit=3", "net.channels=wide")
    with pytest.raises(
        InvalidSetting, match=r"^net\.limit: expected an integer or null \(default null\), got"
    ):
        check("net.limit=abc")


def test_a_key_added_under_a_target_must_be_one_of_its_arguments(check):
    with pytest.raises(InvalidSetting) as caught:
        check("+net.depth=2")
    assert str(caught.value) == f"net.depth: {__name__}.Net has no argument 'depth' (given as +net.depth)"


def test_only_the_checked_overrides_are_judged_and_the_message_names_their_source(check):
    check("model=other", "model.depth=[1]", checked=[])
    check("model=other", "count=x", checked=["model.depth=deeper"])
    with pytest.raises(InvalidSetting, match=r"^stages\.x: model\.depth: expected a string"):
        check("model=other", "model.depth=[1]", checked=["model.depth=[1]"], source="stages.x")


TEST_SUITE_OVERRIDES = [
    *TINY_MODEL_OVERRIDES,
    "trainer=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=0.5",
    "+trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "callbacks.cam_images=null",
    "model.lr_milestone_epochs=[5]",
    "model.contrast_start_epoch=1",
    "paths.cache_dir=/tmp/cache",
]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_passes_with_the_test_suite_overrides(experiment):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        data = (
            TINY_DATA_OVERRIDES if experiment == "synthetic" else ["data.batch_size=8", "data.num_workers=0"]
        )
        check_overrides("train", [f"experiment={experiment}", *data, *TEST_SUITE_OVERRIDES])
        check_overrides(
            "pipeline", [f"experiment={experiment}", "seeds=cams", 'stages.cams.overrides=["scales=[1.0]"]']
        )


def test_a_list_of_group_choices_is_a_choice_not_a_value():
    """``callbacks=[default,attention_accumulation]`` picks two configs of the group (Hydra's runtime.choices
    does not list it); checked as a value it would be "expected a mapping"."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        check_overrides("train", ["callbacks=[default,attention_accumulation]", "trainer.max_epochs=2"])
        with pytest.raises(InvalidSetting, match="trainer.max_epochs"):
            check_overrides("train", ["callbacks=[default,attention_accumulation]", "trainer.max_epochs=x"])


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "seg_experiment").glob("*.yaml")))
def test_every_segmentation_experiment_passes(experiment):
    register_resolvers()
    overrides = [f"seg_experiment={experiment}", "pseudo_masks_dir=/tmp/masks", "trainer.max_epochs=2"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        check_overrides("seg_train", overrides)


def run_script(script: str, run_dir: Path, *overrides: str) -> tuple[ScriptResult, float]:
    """Run the installed console script's entry point in this process (the tests work in ``run_dir``'s parent
    folder, so that nothing the script might write under a relative path lands elsewhere)."""
    start = time.perf_counter()
    result = run_in_process(script, *overrides, f"hydra.run.dir={run_dir}")
    return result, time.perf_counter() - start


def error_lines(result: ScriptResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs: expected an integer or null (default 12), got 'abc'"),
        ("+trainer.foo=1", "trainer.foo: lightning.Trainer has no argument 'foo' (given as +trainer.foo)"),
        ("trainer.foo=1", "Could not override 'trainer.foo'"),  # Hydra's struct mode
    ],
)
def test_rca_train_ends_in_one_line_before_reading_anything(tmp_path, monkeypatch, override, message):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    result, seconds = run_script("rca-train", run_dir, override, f"paths.cache_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and "error: " in lines[0] and message in lines[0], lines
    assert seconds < 30
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()
    assert not list(tmp_path.glob("**/synthetic*")), "the dataset was generated"


@pytest.mark.slow  # in this process, but 2-4 s here: every stage's settings are composed
def test_rca_pipeline_checks_every_stage_before_the_classifier_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    result, seconds = run_script(
        "rca-pipeline",
        run_dir,
        'stages.segmentation.overrides=["trainer.max_epochs=abc"]',
        f"paths.cache_dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result) == [
        "rca-pipeline: error: stages.segmentation: trainer.max_epochs: expected an integer or null "
        "(default 6), got 'abc'"
    ]
    assert seconds < 30
    assert not (run_dir / "classifier").exists() and not list(tmp_path.glob("**/synthetic*"))

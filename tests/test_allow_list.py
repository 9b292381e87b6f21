"""A run folder from someone else is data, never code: its saved config builds only the classes the shipped
configs build, plus those the user names on the command line (``trusted_targets=[...]``), checked on the
resolved tree that is built.

The console-script cases run the installed scripts in this process (``tests/console_runs.py``) on a copy of
a tiny trained run whose config was edited as an attacker would. The other routes (``oc.decode``, escaped
interpolations, ``_partial_``, targets that are not names) are checked on the loaders themselves.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from rca_lightning.inference.trained_runs import resolve_training_run
from rca_lightning.pipeline import STAGES, Pipeline
from rca_lightning.tasks.boundary import classifier_backbone
from rca_lightning.utils.allowed_targets import ALLOWED_TARGETS
from rca_lightning.utils.errors import InvalidData, InvalidSetting
from rca_lightning.utils.folder_lock import LOCK_FILE
from rca_lightning.utils.resolvers import register_resolvers
from rca_lightning.utils.safe_loading import check_config_targets, load_run_config, trusted_target_names
from tests.conftest import CONFIG_DIR
from tests.console_runs import ScriptResult, run_in_process
from tests.stage_helpers import make_segmentation_run, make_training_run

CLASSES = ["disc", "square", "triangle"]
# A class under torch whose constructor starts a process: the current check's package prefixes let it in.
PROCESS_STARTER = "torch.distributed.elastic.multiprocessing.subprocess_handler.SubprocessHandler"


def gathered_targets(node: object) -> set[str]:
    """Every ``_target_`` value in a YAML tree, at any depth (lists included)."""
    if isinstance(node, dict):
        own = {node["_target_"]} if "_target_" in node else set()
        return own.union(*(gathered_targets(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(gathered_targets(value) for value in node))
    return set()


def test_the_allow_list_is_exactly_what_the_shipped_configs_build():
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(files) > 30
    shipped = set().union(*(gathered_targets(yaml.safe_load(path.read_text())) for path in files))
    assert shipped == ALLOWED_TARGETS  # a new class in a shipped config is added to the list knowingly
    for name in ALLOWED_TARGETS:  # so a _partial_ of an allowed name is never a function
        assert isinstance(get_object(name), type), name


def starts_process(marker: Path) -> dict:
    """A config node that, instantiated, runs ``touch marker`` in a new process."""
    return {
        "_target_": PROCESS_STARTER,
        "entrypoint": "touch",
        "args": [str(marker)],
        "env": {},
        "stdout": None,
        "stderr": None,
        "local_rank_id": 0,
        "numa_options": None,
    }


def flow(value: object) -> str:
    """``value`` in OmegaConf's interpolation grammar: ``{key: 'text', other: [1, null]}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    return "null" if value is None else f"'{value}'" if isinstance(value, str) else str(value)


def created_node(node: dict) -> str:
    """``node`` hidden in an ``${oc.create:...}`` interpolation."""
    return "${oc.create:" + flow(node) + "}"


def wait_for(marker: Path, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return marker.exists()


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """Config node -> a tiny run folder that builds it: ``model`` (rca-train), ``seg_model`` (rca-seg).
    Read-only: tests edit copies (:func:`foreign_copy`)."""
    folder = tmp_path_factory.mktemp("allow_list")
    make_training_run(folder / "classifier", folder / "cache")
    root = Path(json.loads((folder / "classifier" / "metrics.json").read_text())["dataset"]["root"])
    make_segmentation_run(folder / "segmentation", root, CLASSES)
    return {"model": folder / "classifier", "seg_model": folder / "segmentation"}


def foreign_copy(run: Path, destination: Path, node: str, edit) -> Path:
    """A copy of ``run`` whose saved config's ``node`` is ``edit(node as a dict)``, as someone could hand
    it over; returns the config file."""
    shutil.copytree(run, destination)
    config_file = destination / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config_file)
    cfg[node] = edit(OmegaConf.to_container(cfg[node]))
    OmegaConf.save(cfg, config_file)
    return config_file


def dataset_image(trained_runs: dict[str, Path]) -> Path:
    root = json.loads((trained_runs["model"] / "metrics.json").read_text())["dataset"]["root"]
    return sorted(Path(root).glob("JPEGImages/*.jpg"))[0]


def run_script(script: str, *overrides: str, log_dir: Path) -> ScriptResult:
    """The installed console script, run in this process from ``log_dir``'s parent folder."""
    return run_in_process(script, *overrides, f"hydra.run.dir={log_dir}", cwd=log_dir.parent)


def written(folder: Path) -> list[Path]:
    """What a script wrote into ``folder``, less the lock it holds on it while it runs."""
    return [path for path in folder.rglob("*") if path.name != LOCK_FILE] if folder.exists() else []


def refusal_line(result: ScriptResult, script: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), lines
    return lines[0]


def test_the_process_starter_runs_when_built_unchecked(tmp_path):
    marker = tmp_path / "started"
    instantiate(OmegaConf.create(starts_process(marker))).proc.wait()
    assert marker.exists()  # what the console-script cases below must prevent
    hidden = tmp_path / "started_from_oc_create"
    sequential = {"_target_": "torch.nn.Sequential", "_args_": [created_node(starts_process(hidden))]}
    with pytest.raises(InstantiationException, match="not a Module"):  # refused after it was built
        instantiate(OmegaConf.create(sequential))
    assert wait_for(hidden)


# (script, the run's node, its overrides given (run copy, image, output folder))
SCRIPTS = [
    (
        "rca-predict",
        "model",
        lambda run, image, out: [f"run_dir={run}", f"inputs={image}", f"output_dir={out}"],
    ),
    ("rca-cams", "model", lambda run, image, out: [f"train_dir={run}", f"cams_dir={out}"]),
    ("rca-export", "seg_model", lambda run, image, out: [f"run_dir={run}", f"output={out / 'net.onnx'}"]),
]


@pytest.mark.parametrize(("script", "node", "overrides"), SCRIPTS, ids=[case[0] for case in SCRIPTS])
@pytest.mark.slow
def test_a_run_folder_that_starts_a_process_is_refused_in_one_line(
    trained_runs, tmp_path, script, node, overrides
):
    marker = tmp_path / "started"
    config_file = foreign_copy(trained_runs[node], tmp_path / "run", node, lambda _: starts_process(marker))
    out = tmp_path / "out"
    result = run_script(
        script, *overrides(tmp_path / "run", dataset_image(trained_runs), out), log_dir=tmp_path / "log"
    )
    line = refusal_line(result, script)
    assert (
        f"{config_file}: {node}._target_='{PROCESS_STARTER}' is not a class the shipped configs build" in line
    )
    assert not marker.exists() and written(out) == []


@pytest.mark.slow
def test_a_target_created_by_an_interpolation_is_checked_as_resolved(trained_runs, tmp_path):
    marker = tmp_path / "started"
    sequential = {"_target_": "torch.nn.Sequential", "_args_": [created_node(starts_process(marker))]}
    config_file = foreign_copy(trained_runs["model"], tmp_path / "run", "model", lambda _: sequential)
    out = tmp_path / "out"
    result = run_script(
        "rca-predict",
        f"run_dir={tmp_path / 'run'}",
        f"inputs={dataset_image(trained_runs)}",
        f"output_dir={out}",
        "trusted_targets=[torch.nn.Sequential]",  # the outer class passes: the hidden one is what is caught
        log_dir=tmp_path / "log",
    )
    line = refusal_line(result, "rca-predict")
    assert f"{config_file}: model._args_[0]._target_='{PROCESS_STARTER}'" in line
    assert not marker.exists() and written(out) == []


USER_MODULE = '''
import os
from pathlib import Path

from rca_lightning.models import TimmBackbone


class MarkedBackbone(TimmBackbone):
    """A user's own backbone: the project's, leaving a file behind to show that it was built."""

    def __init__(self, *args, **kwargs):
        Path(os.environ["USER_BACKBONE_MARKER"]).touch()
        super().__init__(*args, **kwargs)
'''


@pytest.mark.slow
def test_a_class_named_in_trusted_targets_is_built_and_only_then(
    trained_runs, tmp_path, monkeypatch, request
):
    (tmp_path / "user_code").mkdir()
    (tmp_path / "user_code" / "user_nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(tmp_path / "user_code")  # importable, as from the user's PYTHONPATH
    request.addfinalizer(lambda: sys.modules.pop("user_nets", None))  # and forgotten after the test
    marker = tmp_path / "user_backbone_built"
    monkeypatch.setenv("USER_BACKBONE_MARKER", str(marker))

    def user_backbone(model: dict) -> dict:
        model["net"]["backbone"]["_target_"] = "user_nets.MarkedBackbone"
        return model

    config_file = foreign_copy(trained_runs["model"], tmp_path / "run", "model", user_backbone)
    common = [f"run_dir={tmp_path / 'run'}", f"inputs={dataset_image(trained_runs)}", "cam_threshold=0.3"]
    refused = run_script(
        "rca-predict", *common, f"output_dir={tmp_path / 'refused'}", log_dir=tmp_path / "log1"
    )
    line = refusal_line(refused, "rca-predict")
    assert f"{config_file}: model.net.backbone._target_='user_nets.MarkedBackbone'" in line
    assert "trusted_targets=[...]" in line and not marker.exists()
    trusted = run_script(
        "rca-predict",
        *common,
        f"output_dir={tmp_path / 'masks'}",
        "trusted_targets=[user_nets.MarkedBackbone]",
        "device=cpu",
        "progress=false",
        log_dir=tmp_path / "log2",
    )
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert marker.exists() and (tmp_path / "masks" / f"{dataset_image(trained_runs).stem}.png").is_file()


def classifier_with_model(trained_runs: dict[str, Path], tmp_path: Path, model: dict) -> tuple[Path, Path]:
    """(run copy, its config file) of the classifier run, its ``model`` replaced by ``model``."""
    return tmp_path / "run", foreign_copy(trained_runs["model"], tmp_path / "run", "model", lambda _: model)


@pytest.mark.parametrize(
    ("model", "key_path", "target"),
    [
        # oc.decode turns a string into a node.
        (
            {
                "_target_": "torch.nn.Sequential",
                "_args_": ["${oc.decode:'{_target_: os.system, _args_: [x]}'}"],
            },
            r"model\._args_\[0\]",
            r"'os\.system'",
        ),
        # Nested lists, and a partial of a function (an allowed class's partial passes: test_safe_loading).
        (
            {"_target_": "torch.nn.Sequential", "layers": [[{"_target_": "os.system"}]]},
            r"model\.layers\[0\]\[0\]",
            r"'os\.system'",
        ),
        (
            {
                "_target_": "rca_lightning.lit.RCALitModule",
                "optimizer": {"_target_": "os.system", "_partial_": True},
            },
            r"model\.optimizer",
            r"'os\.system'",
        ),
        # Targets that are no names at all.
        ({"_target_": 3}, "model", "3"),
        ({"_target_": ["os", "system"]}, "model", r"\['os', 'system'\]"),
        ({"_target_": {"name": "os.system"}}, "model", r"\{'name': 'os.system'\}"),
    ],
)
def test_every_route_to_a_target_is_checked(trained_runs, tmp_path, model, key_path, target):
    run, config_file = classifier_with_model(trained_runs, tmp_path, model)
    with pytest.raises(InvalidData, match=rf"{config_file}: {key_path}\._target_={target} is not") as caught:
        resolve_training_run(run, None, None, ["torch.nn.Sequential"])
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidData, match=rf"{config_file}: {key_path}\._target_"):  # rca-boundary's way in
        classifier_backbone(str(run), ["torch.nn.Sequential"])


def test_an_escaped_interpolation_that_would_resolve_again_is_refused(trained_runs, tmp_path):
    hidden = "\\${oc.create:{_target_: os.getpid}}"
    resolved_once = OmegaConf.to_container(OmegaConf.create({"x": hidden}), resolve=True)
    assert OmegaConf.to_container(OmegaConf.create(resolved_once), resolve=True) == {
        "x": {"_target_": "os.getpid"}
    }
    run, config_file = classifier_with_model(
        trained_runs, tmp_path, {"_target_": "torch.nn.Sequential", "_args_": [hidden]}
    )
    with pytest.raises(
        InvalidData, match=rf"{config_file}: model\._args_\[0\]=.* resolves to another interpolation"
    ):
        resolve_training_run(run, None, None, ["torch.nn.Sequential"])


def test_the_tree_returned_is_the_one_checked(tmp_path):
    calls = []

    def allowed_once() -> str:
        calls.append(1)
        return "torch.optim.SGD" if len(calls) == 1 else "os.system"

    OmegaConf.register_new_resolver("allowed_once", allowed_once, use_cache=False)
    try:
        config_file = tmp_path / "config.yaml"
        OmegaConf.save(
            OmegaConf.create({"model": {"optimizer": {"_target_": "${allowed_once:}"}}}), config_file
        )
        loaded = load_run_config(config_file, "model")
        assert (
            loaded.optimizer._target_ == "torch.optim.SGD" and loaded.optimizer._target_ == "torch.optim.SGD"
        )
        assert len(calls) == 1 and "${" not in OmegaConf.to_yaml(loaded)
    finally:
        OmegaConf.clear_resolver("allowed_once")


def test_a_config_that_does_not_resolve_is_one_line_naming_the_file(trained_runs, tmp_path):
    run, config_file = classifier_with_model(
        trained_runs, tmp_path, {"_target_": "rca_lightning.models.RCANet", "name": "${no_such_resolver:1}"}
    )
    with pytest.raises(
        InvalidData, match=rf"{config_file}: model cannot be resolved \(.*no_such_resolver"
    ) as caught:
        resolve_training_run(run, None, None)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("reference", ["model.path", "elsewhere", "environment only"])
def test_resolvers_that_reach_beyond_the_config_are_not_run(tmp_path, monkeypatch, reference):
    """``sqlite_url`` would create a folder anywhere and ``oc.env`` read the environment: a foreign node (or a
    node it refers to) that uses them is refused, nothing is created, and the resolvers work again after."""
    register_resolvers()
    made = tmp_path / "made_by_the_config" / "sub"
    monkeypatch.setenv("RCA_TEST_SECRET", "secret")
    config_file = tmp_path / "config.yaml"
    path = {"elsewhere": "${elsewhere}", "environment only": "plain"}.get(
        reference, f"${{sqlite_url:{made}/db}}"
    )
    config = {
        "elsewhere": f"${{sqlite_url:{made}/db}}",
        "model": {"_target_": "torch.nn.Identity", "path": path, "secret": "${oc.env:RCA_TEST_SECRET}"},
    }
    OmegaConf.save(OmegaConf.create(config), config_file)
    with pytest.raises(InvalidData, match=rf"{config_file}: model cannot be resolved .*beyond the config"):
        load_run_config(config_file, "model")
    assert not made.parent.exists()
    restored = OmegaConf.create({"a": "${oc.env:RCA_TEST_SECRET}", "b": f"${{sqlite_url:{made}/db}}"})
    assert restored.a == "secret" and restored.b == f"sqlite:///{made}/db" and made.is_dir()


def test_trust_comes_from_the_command_line_never_from_the_folder(tmp_path):
    config_file = tmp_path / "config.yaml"
    OmegaConf.save(
        OmegaConf.create({"trusted_targets": ["os.system"], "model": {"_target_": "os.system"}}), config_file
    )
    with pytest.raises(InvalidData, match=rf"{config_file}: model\._target_='os.system'"):
        load_run_config(config_file, "model")
    assert load_run_config(config_file, "model", ["os.system"])._target_ == "os.system"  # the user's choice
    check_config_targets({"a": {"_target_": "my_package.MyNet"}}, "f", ["my_package.MyNet"])


@pytest.mark.parametrize("setting", ["os.system", [1], ["os.system; touch x"], {"a": "b.C"}])
def test_trusted_targets_must_be_a_list_of_dotted_names(setting):
    with pytest.raises(InvalidSetting, match=r"trusted_targets=.*: expected a list of dotted class names"):
        trusted_target_names(setting)
    assert trusted_target_names(OmegaConf.create(["a.B", "c.d.E"])) == {"a.B", "c.d.E"}


def test_the_pipeline_hands_trusted_targets_to_the_stages_that_read_run_folders(tmp_path):
    overrides = ["trusted_targets=[my_package.MyNet]"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides, return_hydra_config=True)
        settings = Pipeline(cfg, overrides, dict(cfg.hydra.runtime.choices), tmp_path / "run").settings
    by_name = {stage.name: stage.arguments(settings) for stage in STAGES}
    assert by_name["cams"].values["trusted_targets"] == ["my_package.MyNet"]
    assert by_name["boundary"].values["trusted_targets"] == ["my_package.MyNet"]
    assert not any("trusted_targets" in override for override in by_name["classifier"].overrides)

"""Nothing executes from a file the user points at: checkpoints load as weights only, and run-folder
configs build only the classes the shipped configs build (tests/test_allow_list.py: the console scripts)."""

import json
import os
import pathlib
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rca_lightning.inference.trained_runs import (
    load_classifier,
    load_segmentation_network,
    resolve_training_run,
)
from rca_lightning.tasks.train import train
from rca_lightning.utils.checkpoint_io import AtomicCheckpointIO
from rca_lightning.utils.errors import InvalidData, MissingInput
from rca_lightning.utils.safe_loading import check_config_targets, load_checkpoint, load_run_config
from tests.stage_helpers import TINY_STAGE_DATA, compose_config

CLASS_NAMES = ["disc", "square", "triangle"]


class TouchesWhenUnpickled:
    """Unpickling it calls ``Path.touch(marker)``: a stand-in for any code a crafted pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class RunsShellWhenUnpickled(TouchesWhenUnpickled):
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_crafted_checkpoint(path: Path, payload: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "hyper_parameters": {"note": payload}}, path)
    return path


@pytest.mark.parametrize("payload_class", [TouchesWhenUnpickled, RunsShellWhenUnpickled])
def test_crafted_checkpoints_run_nothing_in_either_loader(tmp_path, payload_class):
    live_marker = tmp_path / "proof_the_payload_runs"
    torch.load(
        write_crafted_checkpoint(tmp_path / "live.ckpt", payload_class(live_marker)), weights_only=False
    )
    assert live_marker.exists()

    marker = tmp_path / "created_by_the_checkpoint"
    checkpoint = write_crafted_checkpoint(
        tmp_path / "seg" / "checkpoints" / "last.ckpt", payload_class(marker)
    )
    with pytest.raises(
        InvalidData, match=r"last\.ckpt: refuses to unpickle .* \(weights_only=True\)"
    ) as caught:
        load_classifier(OmegaConf.create({}), checkpoint, CLASS_NAMES)
    assert str(checkpoint) in str(caught.value) and "\n" not in str(caught.value)
    segmentation_dir = tmp_path / "seg"
    save_seg_config(segmentation_dir)
    (segmentation_dir / "metrics.json").write_text(json.dumps({"checkpoint": str(checkpoint)}))
    with pytest.raises(InvalidData, match=f"{checkpoint}: refuses to unpickle"):
        load_segmentation_network(segmentation_dir)
    with pytest.raises(InvalidData, match=f"{checkpoint}: refuses to unpickle"):
        AtomicCheckpointIO().load_checkpoint(checkpoint)  # what the trainer reads when resuming
    assert not marker.exists()


def test_resuming_training_from_a_crafted_checkpoint_runs_nothing(
    compose_train_config, tmp_path, monkeypatch
):
    # The trainer reads ckpt_path through the config's AtomicCheckpointIO, weights only, even where torch
    # is told to unpickle everything by default.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "created_by_the_checkpoint"
    checkpoint = write_crafted_checkpoint(tmp_path / "crafted.ckpt", TouchesWhenUnpickled(marker))
    with pytest.raises(InvalidData, match=f"{checkpoint}: refuses to unpickle"):
        train(compose_train_config(f"ckpt_path={checkpoint}", "trainer.max_epochs=1"))
    assert not marker.exists()


def test_files_that_are_not_checkpoints_are_named(tmp_path):
    for name, content in [("notes.ckpt", b"not a checkpoint\n"), ("broken.ckpt", b"PK\x03\x04cut short")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InvalidData, match=f"{tmp_path / name}: not a readable torch checkpoint"):
            load_checkpoint(tmp_path / name)
    weights = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, weights)
    with pytest.raises(InvalidData, match=f"{weights}: expected a Lightning checkpoint with a 'state_dict'"):
        load_checkpoint(weights)
    with pytest.raises(MissingInput, match=f"{tmp_path / 'absent.ckpt'} not found: expected a checkpoint"):
        load_checkpoint(tmp_path / "absent.ckpt")


def test_a_trained_classifier_with_attention_maps_loads_through_the_safe_loaders(
    compose_train_config, tmp_path
):
    cfg = compose_train_config(
        "callbacks=[default,attention_accumulation]",
        "callbacks.attention_accumulation.start_epoch=0",
        "trainer.max_epochs=1",
    )
    train(cfg)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")  # as Hydra leaves it in the run folder

    run = resolve_training_run(tmp_path, None, OmegaConf.create({}))
    checkpoint = load_checkpoint(run.checkpoint)
    assert len(checkpoint["callbacks"]["AttentionAccumulationCallback"]["maps"]) > 0
    assert "RNGStateCallback" in checkpoint["callbacks"]
    model = load_classifier(run.model_cfg, run.checkpoint, list(cfg.data.class_names))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][name]), name
    assert AtomicCheckpointIO().load_checkpoint(run.checkpoint)["global_step"] == checkpoint["global_step"]


def test_a_segmentation_checkpoint_written_by_the_trainer_loads(tmp_path):
    cfg = save_seg_config(tmp_path)
    model = instantiate(cfg.seg_model)
    trainer = instantiate(cfg.trainer, logger=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "metrics.json").write_text(
        json.dumps({"checkpoint": str(tmp_path / "checkpoints" / "last.ckpt")})
    )
    loaded = load_segmentation_network(tmp_path)
    assert not loaded.training
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def save_seg_config(segmentation_dir: Path):
    """The composed ``rca-seg`` config, saved where Hydra leaves it in the run folder."""
    cfg = compose_config("seg_train", segmentation_dir, [*TINY_STAGE_DATA, "trainer=cpu"])
    (segmentation_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, segmentation_dir / ".hydra" / "config.yaml")
    return cfg


def write_training_run(train_dir: Path, model_cfg: dict, marker: Path) -> Path:
    """A run folder whose config builds ``model_cfg``; its checkpoint would create ``marker`` if loaded."""
    (train_dir / ".hydra").mkdir(parents=True)
    config_file = train_dir / ".hydra" / "config.yaml"
    OmegaConf.save(OmegaConf.create({"model": model_cfg, "seed": 0}), config_file)
    checkpoint = write_crafted_checkpoint(train_dir / "last.ckpt", TouchesWhenUnpickled(marker))
    (train_dir / "metrics.json").write_text(json.dumps({"checkpoint": str(checkpoint)}))
    return config_file


@pytest.mark.parametrize(
    ("model_cfg", "key_path", "target"),
    [
        ({"_target_": "os.system", "_args_": ["touch {marker}"]}, "model", "os.system"),
        (
            {
                "_target_": "rca_lightning.models.RCANet",
                "layers": [{}, {"_target_": "builtins.eval", "_args_": ["1"]}],
            },
            r"model\.layers\[1\]",
            "builtins.eval",
        ),
        ({"_target_": "subprocess.run", "_args_": [["touch", "{marker}"]]}, "model", "subprocess.run"),
        # Inside an allowed package, yet a function of another one, or a function that runs a pickle.
        (
            {"_target_": "rca_lightning.cli.pipeline.os.system"},
            "model",
            "rca_lightning.cli.pipeline.os.system",
        ),
        ({"_target_": "torch.load", "f": "{marker}", "weights_only": False}, "model", "torch.load"),
        # Checked as resolved: what instantiate would call.
        ({"_target_": "${oc.select:no_such_key,os.system}"}, "model", "os.system"),
        # An allowed class spelled another way: names are compared as the shipped configs write them.
        (
            {"_target_": "rca_lightning.models.rca_net.RCANet"},
            "model",
            r"rca_lightning\.models\.rca_net\.\w+",
        ),
    ],
)
def test_run_folder_configs_naming_other_targets_are_refused_before_anything_runs(
    tmp_path, model_cfg, key_path, target
):
    marker = tmp_path / "created_by_the_config"
    model_cfg = json.loads(json.dumps(model_cfg).replace("{marker}", str(marker)))
    config_file = write_training_run(tmp_path / "train", model_cfg, marker)
    expected = f"{config_file}: {key_path}._target_='{target}'"
    with pytest.raises(InvalidData, match=expected):
        resolve_training_run(tmp_path / "train", None, OmegaConf.create({}))
    segmentation_dir = tmp_path / "seg"
    (segmentation_dir / ".hydra").mkdir(parents=True)
    seg_config = segmentation_dir / ".hydra" / "config.yaml"
    OmegaConf.save(OmegaConf.create({"seg_model": model_cfg}), seg_config)
    (segmentation_dir / "metrics.json").write_text(
        json.dumps({"checkpoint": str(tmp_path / "train" / "last.ckpt")})
    )
    with pytest.raises(InvalidData, match=f"{seg_config}: seg_model"):
        load_segmentation_network(segmentation_dir)
    assert not marker.exists()


def test_configs_of_allowed_classes_pass(tmp_path):
    cfg = compose_config(
        "train", tmp_path, [*TINY_STAGE_DATA, "trainer=cpu", "callbacks=[default,step_checkpoint]"]
    )
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    loaded = load_run_config(tmp_path / "config.yaml", "model")
    assert OmegaConf.to_container(loaded) == OmegaConf.to_container(cfg.model, resolve=True)
    assert loaded.net.num_classes == len(cfg.data.class_names)  # ${len:${data.class_names}}, resolved
    check_config_targets({"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True}}, "x")

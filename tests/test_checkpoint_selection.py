"""No pixel label chooses a checkpoint unless asked: the classifier's CAMs come from its last epoch."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from rca_lightning.tasks.cams import cams
from rca_lightning.tasks.train import train
from rca_lightning.utils.checkpoint_selection import (
    check_selection,
    checkpoint_monitor,
    checkpoint_top_k,
    uses_pixel_labels,
)
from rca_lightning.utils.errors import InvalidSetting
from tests.stage_helpers import compose_config


def _train(compose_train_config, *overrides: str, epochs: int = 3):
    cfg = compose_train_config(f"trainer.max_epochs={epochs}", "data.generator.num_train=24", *overrides)
    metrics, objects = train(cfg)
    # What the console script leaves in .hydra/ (rca-cams builds the model from it).
    (Path(cfg.paths.output_dir) / ".hydra").mkdir()
    OmegaConf.save(cfg, Path(cfg.paths.output_dir) / ".hydra" / "config.yaml")
    return cfg, json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text()), objects


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


def test_selection_table():
    assert checkpoint_monitor("last") is None and checkpoint_top_k("last") == 0
    assert checkpoint_monitor("best_map") == "val/mAP" and checkpoint_top_k("best_map") == 1
    assert checkpoint_monitor("best_cam_miou") == "val/cam_mIoU"
    assert checkpoint_monitor("best_val_miou") == "val/seg_mIoU"
    assert [uses_pixel_labels(s) for s in ("last", "best_map", "best_cam_miou", "best_val_miou")] == [
        False,
        False,
        True,
        True,
    ]
    with pytest.raises(InvalidSetting, match=r"checkpoint='best': expected one of \['last', 'best_map', "):
        check_selection("best")


@pytest.mark.slow
def test_cams_load_the_last_epoch_not_an_earlier_one(compose_train_config, tmp_path):
    # Keep every epoch's file too, so an earlier epoch's weights exist to be (wrongly) picked up: two
    # epochs give the first epoch's file beside the last one's (nothing learnt is checked).
    cfg, summary, objects = _train(
        compose_train_config,
        "callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.model_checkpoint.monitor=null",
        epochs=2,
    )
    run_dir = Path(cfg.paths.output_dir)
    assert summary["checkpoint_selection"] == "last"
    assert summary["uses_pixel_labels_for_selection"] is False
    assert Path(summary["checkpoint"]) == run_dir / "checkpoints" / "last.ckpt"
    earlier = torch.load(run_dir / "checkpoints" / "epoch_000.ckpt", weights_only=True)["state_dict"]

    cams_cfg = compose_config(
        "cams", tmp_path / "cams", [f"train_dir={run_dir}", "trainer=cpu", "scales=[1.0]"]
    )
    _, built = cams(cams_cfg)
    loaded, final = _state(built["model"]), _state(objects["model"])
    assert loaded.keys() == final.keys()
    for name in final:
        torch.testing.assert_close(loaded[name], final[name], rtol=0, atol=0, msg=name)
    differs = [name for name in final if not torch.equal(earlier[name].cpu(), loaded[name])]
    assert any(name.startswith("net.") for name in differs), (
        "epoch 0 and the last epoch hold the same weights"
    )
    settings = json.loads((Path(cams_cfg.paths.output_dir) / "cams.json").read_text())
    assert settings["checkpoint_selection"] == "last"
    assert Path(settings["checkpoint"]) == run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(
    ("selection", "metric"), [("best_map", "val/mAP"), ("best_cam_miou", "val/cam_mIoU")]
)
@pytest.mark.slow
def test_explicit_best_selection_names_the_best_file(compose_train_config, selection, metric):
    cfg, summary, objects = _train(compose_train_config, f"checkpoint={selection}")
    monitored = [
        c for c in objects["trainer"].checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor
    ]
    assert [c.monitor for c in monitored] == [metric]
    assert summary["checkpoint"] == monitored[0].best_model_path
    assert Path(summary["checkpoint"]).name.startswith("epoch_")
    assert summary["checkpoint_score"] == pytest.approx(float(monitored[0].best_model_score))
    assert summary["uses_pixel_labels_for_selection"] is (selection == "best_cam_miou")
    # The monitored mAP is the mean AP of the classes with a tagged val image; no other class has an AP.
    logged = summary["metrics"]
    class_names = summary["dataset"]["class_names"]
    present = [name for name in class_names if logged[f"val/AP_images_{name}"] > 0]
    assert present and {key for key in logged if key.startswith("val/AP_") and "images" not in key} == {
        f"val/AP_{name}" for name in present
    }
    assert logged["val/mAP"] == pytest.approx(
        sum(logged[f"val/AP_{name}"] for name in present) / len(present)
    )

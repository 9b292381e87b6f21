"""Exact resume: a run stopped after an epoch, or killed mid-epoch, continues as if never interrupted."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning import Callback
from omegaconf import open_dict

from rca_lightning.pseudo.attention_store import ATTENTION_FILE, WRITTEN_FILE
from rca_lightning.tasks.train import train
from tests.conftest import CONFIG_DIR, TINY_DATA_OVERRIDES, TINY_MODEL_OVERRIDES

MAX_EPOCHS = 2
STEPS_PER_EPOCH = 6  # 48 training images, batches of 8
CHECKPOINT_EVERY = 2  # optimiser steps between mid-epoch checkpoints
KILLED_AT_STEP = 9  # epoch 1, batch 2: one step after the checkpoint of step 8


class SimulatedKill(RuntimeError):
    pass


class RecordingCallback(Callback):
    """Per step: position, loss and images; the bank and accumulation file when training (re)starts and
    ends. Saved to ``record_file`` when training ends or is killed (a ``SimulatedKill`` after a step)."""

    def __init__(
        self, record_file: str, stop_after_epoch: int | None = None, kill_after_step: int | None = None
    ):
        self.record_file = record_file
        self.stop_after_epoch = stop_after_epoch
        self.kill_after_step = kill_after_step
        self.record: dict = {"steps": []}

    def on_train_start(self, trainer, pl_module) -> None:
        folder = Path(trainer.default_root_dir) / "attention"
        self.record["bank_at_start"] = {k: v.clone() for k, v in pl_module.memory_bank.state_dict().items()}
        self.record["maps_at_start"] = (np.load(folder / ATTENTION_FILE), np.load(folder / WRITTEN_FILE))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.record["steps"].append(
            {
                "position": (trainer.current_epoch, batch_idx, trainer.global_step),
                "loss": outputs["loss"].item(),
                "images": batch["index"].tolist(),
            }
        )
        if trainer.global_step == self.kill_after_step:
            raise SimulatedKill(f"killed after step {trainer.global_step}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.stop_after_epoch:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.record["bank_at_end"] = {k: v.clone() for k, v in pl_module.memory_bank.state_dict().items()}
        torch.save(self.record, self.record_file)

    def on_exception(self, trainer, pl_module, exception) -> None:
        torch.save(self.record, self.record_file)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def run(cache: Path, folder: Path, *overrides: str, ckpt_path: Path | None = None) -> dict:
    """One `rca-train` job (in this process) writing to ``folder``; returns its recorder's record."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY_DATA_OVERRIDES,
                *TINY_MODEL_OVERRIDES,
                "trainer=cpu",
                f"trainer.max_epochs={MAX_EPOCHS}",
                "trainer.enable_progress_bar=false",
                "+trainer.enable_model_summary=false",
                "logger=csv",
                "callbacks=[default,attention_accumulation,step_checkpoint]",
                f"callbacks.step_checkpoint.every_n_train_steps={CHECKPOINT_EVERY}",
                "model.contrast_start_epoch=1",
                "model.confidence_threshold=0.3",
                f"paths.cache_dir={cache}",
                f"+callbacks.recorder._target_={__name__}.RecordingCallback",
                f"+callbacks.recorder.record_file={folder / 'record.pt'}",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
        cfg.ckpt_path = str(ckpt_path) if ckpt_path else None
    try:
        train(cfg)
    except SimulatedKill:
        pass
    return torch.load(folder / "record.pt", weights_only=False)


@pytest.fixture(scope="module")
def uninterrupted(cache, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    return folder, run(cache, folder)


def assert_same_banks(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.slow
def test_stopped_after_an_epoch_resumes_with_the_same_losses_and_bank(uninterrupted, cache, tmp_path):
    reference_dir, reference = uninterrupted
    stopped = run(cache, tmp_path / "stopped", "+callbacks.recorder.stop_after_epoch=0")
    assert [step["position"][0] for step in stopped["steps"]] == [0] * STEPS_PER_EPOCH
    checkpoint = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    resumed = run(cache, tmp_path / "resumed", ckpt_path=checkpoint)

    steps = stopped["steps"] + resumed["steps"]
    assert len(steps) == MAX_EPOCHS * STEPS_PER_EPOCH
    for key in ("position", "images", "loss"):
        assert [step[key] for step in steps] == [step[key] for step in reference["steps"]], key
    assert_same_banks(resumed["bank_at_end"], reference["bank_at_end"])
    assert reference["bank_at_end"]["count"].sum() > 0 and reference["bank_at_end"]["prototype_valid"].any()
    for name in (ATTENTION_FILE, WRITTEN_FILE):
        resumed_file = (tmp_path / "resumed" / "attention" / name).read_bytes()
        assert resumed_file == (reference_dir / "attention" / name).read_bytes(), name


@pytest.mark.slow
def test_killed_mid_epoch_resumes_with_its_bank_maps_and_position(uninterrupted, cache, tmp_path):
    _, reference = uninterrupted
    killed = run(cache, tmp_path / "killed", f"+callbacks.recorder.kill_after_step={KILLED_AT_STEP}")
    assert killed["steps"][-1]["position"] == (1, 2, KILLED_AT_STEP)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last-step.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == KILLED_AT_STEP - 1
    killed_maps = np.load(tmp_path / "killed" / "attention" / ATTENTION_FILE)

    resumed = run(cache, tmp_path / "resumed", ckpt_path=checkpoint)
    # The bank and maps the resumed run starts from are the checkpoint's, not the killed run's last ones.
    checkpoint_bank = {
        name.removeprefix("memory_bank."): value
        for name, value in state["state_dict"].items()
        if name.startswith("memory_bank.")
    }
    assert_same_banks(resumed["bank_at_start"], checkpoint_bank)
    assert checkpoint_bank["count"].sum() > 0 and checkpoint_bank["prototype_valid"].any()
    attention, written = resumed["maps_at_start"]
    accumulation_state = next(v for k, v in state["callbacks"].items() if "AttentionAccumulation" in k)
    assert np.array_equal(written, accumulation_state["written"].numpy())
    rows, classes = np.nonzero(written)
    assert np.array_equal(attention[rows, classes], accumulation_state["maps"].numpy())
    assert attention.sum() > 0 and not np.array_equal(attention, killed_maps)  # step 9 wrote more

    # It continues at batch 2 of epoch 1 with the images an uninterrupted run sees there.
    expected = [step for step in reference["steps"] if step["position"][2] >= KILLED_AT_STEP]
    assert [step["position"] for step in resumed["steps"]] == [step["position"] for step in expected]
    assert [step["images"] for step in resumed["steps"]] == [step["images"] for step in expected]
    assert [step["loss"] for step in resumed["steps"]] == [step["loss"] for step in expected]
    assert_same_banks(resumed["bank_at_end"], reference["bank_at_end"])

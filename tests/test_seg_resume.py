"""Exact resume of the segmentation stage: a run killed mid-epoch and resumed from its step checkpoint takes
the same steps (losses, learning rates of the per-step poly schedule) as a run never interrupted."""

import json
from pathlib import Path

import pytest
from lightning import Callback
from omegaconf import open_dict

from rca_lightning.data import SyntheticVOCGenerator
from rca_lightning.tasks.seg import segment
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.run_fingerprint import FINGERPRINT_FILE
from tests.stage_helpers import compose_config

CLASSES = ["disc", "square", "triangle"]
CHECKPOINT_EVERY = 3  # optimiser steps; 4 steps an epoch, so the checkpoint of step 6 is mid-epoch 1
KILLED_AT_STEP = 7  # one step after it


class SimulatedKill(RuntimeError):
    pass


class StepRecorder(Callback):
    """(global step, loss, lr of every group) after each step, written to ``record_file`` as JSON when
    training ends or is killed (``kill_after_step``)."""

    def __init__(self, record_file: str, kill_after_step: int | None = None) -> None:
        self.record_file, self.kill_after_step, self.steps = record_file, kill_after_step, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
        self.steps.append([trainer.global_step, outputs["loss"].item(), lrs])
        if trainer.global_step == self.kill_after_step:
            raise SimulatedKill(f"killed after step {trainer.global_step}")

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.record_file).write_text(json.dumps(self.steps))

    def on_exception(self, trainer, pl_module, exception) -> None:
        Path(self.record_file).write_text(json.dumps(self.steps))


def run(
    root: Path,
    folder: Path,
    kill_after_step: int | None = None,
    ckpt_path: Path | None = None,
    *overrides: str,
) -> list:
    cfg = compose_config(
        "seg_train",
        folder,
        [
            f"data.root={root}",
            f"data.class_names=[{','.join(CLASSES)}]",
            "data.generator=null",
            "data.batch_size=4",
            "data.num_workers=0",
            f"pseudo_masks_dir={root / 'SegmentationClass'}",
            "crop_size=48",
            "seg_model.net.dilations=[2,4]",
            "evaluate=false",
            "trainer=cpu",
            "trainer.max_epochs=2",
            "logger=csv",
            # The default callbacks, and checkpoints every few steps.
            "callbacks=[model_checkpoint,lr_monitor,rng_state,step_checkpoint]",
            f"callbacks.step_checkpoint.every_n_train_steps={CHECKPOINT_EVERY}",
            f"+callbacks.recorder._target_={__name__}.StepRecorder",
            f"+callbacks.recorder.record_file={folder / 'steps.json'}",
            f"+callbacks.recorder.kill_after_step={kill_after_step}",
            *overrides,
        ],
    )
    with open_dict(cfg):
        cfg.ckpt_path = str(ckpt_path) if ckpt_path else None
    try:
        segment(cfg)
    except SimulatedKill:
        pass
    return json.loads((folder / "steps.json").read_text())


@pytest.mark.slow
def test_a_killed_segmentation_run_resumes_exactly(tmp_path):
    default_callbacks = compose_config("seg_train", tmp_path, ["pseudo_masks_dir=x"]).callbacks
    assert {"model_checkpoint", "last_checkpoint", "lr_monitor", "rng_state"} <= set(default_callbacks)
    root = tmp_path / "VOC2012"
    SyntheticVOCGenerator(CLASSES, num_train=16, num_val=4, image_size=48, seed=0).generate(root)
    straight = run(root, tmp_path / "straight")
    killed = run(root, tmp_path / "killed", kill_after_step=KILLED_AT_STEP)
    resumed = run(
        root, tmp_path / "resumed", ckpt_path=tmp_path / "killed" / "checkpoints" / "last-step.ckpt"
    )
    assert [step for step, _, _ in straight] == list(range(1, 9))
    assert [step for step, _, _ in killed] == list(range(1, KILLED_AT_STEP + 1))
    assert [step for step, _, _ in resumed] == [7, 8]  # from the checkpoint of step 6
    by_step = {step: (loss, lrs) for step, loss, lrs in straight}
    for step, loss, lrs in resumed:
        assert loss == pytest.approx(by_step[step][0], rel=1e-6, abs=1e-7), step
        assert lrs == pytest.approx(by_step[step][1], rel=1e-9), step
    assert straight[-1][2][0] < straight[0][2][0]  # the poly schedule did decay
    # Resumed in its own folder with a longer schedule: refused before a step, the record kept.
    killed_dir = tmp_path / "killed"
    recorded = (killed_dir / FINGERPRINT_FILE).read_bytes()
    checkpoint = killed_dir / "checkpoints" / "last-step.ckpt"
    with pytest.raises(InvalidSetting, match=r"^trainer\.max_epochs: .* records 2 where this run has 3;"):
        run(root, killed_dir, KILLED_AT_STEP, checkpoint, "trainer.max_epochs=3")
    assert (killed_dir / FINGERPRINT_FILE).read_bytes() == recorded
    assert json.loads((killed_dir / "steps.json").read_text()) == killed  # no step taken

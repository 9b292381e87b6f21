"""Atomic checkpoint files: whole or absent, written beside their target, the trainer's default writer."""

import os

import pytest
import torch
from hydra.utils import instantiate

from rca_lightning.utils.checkpoint_io import AtomicCheckpointIO


class FailsWhenSaved:
    def __reduce__(self):
        raise RuntimeError("disk full")


def test_checkpoint_round_trips_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(5.0)}, "epoch": 3}, path)
    loaded = AtomicCheckpointIO().load_checkpoint(path, weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.arange(5.0))
    assert os.listdir(path.parent) == ["last.ckpt"]


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        writer.save_checkpoint({"epoch": 2, "bad": FailsWhenSaved()}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_the_file_is_renamed_from_the_same_folder(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda source, target: renames.append((source, target)) or real_replace(source, target)
    )
    path = tmp_path / "epoch_001.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)
    [(source, target)] = renames
    assert os.path.dirname(source) == str(tmp_path) and target == path


def test_the_trainer_config_writes_checkpoints_atomically(compose_train_config):
    trainer = instantiate(compose_train_config().trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_storage_options_are_refused_for_local_files(tmp_path):
    with pytest.raises(TypeError, match="storage_options"):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"a": 1})

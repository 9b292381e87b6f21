"""Two-process CPU DDP (`rca-train trainer=ddp_cpu trainer.devices=2`), launched as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rca_lightning.data import VOCSegmentationDataset
from rca_lightning.data.voc_layout import CLASS_NAMES_FILE
from rca_lightning.pseudo.attention_store import WRITTEN_FILE
from tests.conftest import TINY_DATA_OVERRIDES, TINY_MODEL_OVERRIDES

NUM_VAL = 15  # odd: Lightning's default sampler would repeat one image to even out the two ranks


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    command = [
        str(Path(sys.executable).with_name("rca-train")),
        *TINY_DATA_OVERRIDES,
        *TINY_MODEL_OVERRIDES,
        f"data.generator.num_val={NUM_VAL}",
        "model.memory_bank.queue_length=128",  # more slots than regions: no slot is written twice
        "model.confidence_threshold=0.0",  # every present region enters the bank
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "callbacks=[default,attention_accumulation]",
        "+callbacks.probe._target_=tests.ddp_probe.RankProbeCallback",
        f"+callbacks.probe.output_dir={run_dir / 'probe'}",
        f"paths.cache_dir={run_dir.parent / 'cache'}",
        f"hydra.run.dir={run_dir}",
    ]
    repo_root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(repo_root),  # the probe callback lives in tests/
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


def rank_records(run_dir: Path) -> list[dict]:
    return [torch.load(run_dir / "probe" / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


@pytest.mark.slow
def test_banks_are_bitwise_identical_and_hold_both_ranks_regions(ddp_run):
    first, second = rank_records(ddp_run)
    assert first["world_size"] == second["world_size"] == 2
    # DDP broadcast no buffer from rank 0 (trainer=ddp_cpu): the callback alone kept the banks identical.
    assert first["forward_sync_buffers"] is second["forward_sync_buffers"] is False
    for name in ("queue", "pointer", "count", "prototypes", "prototype_valid"):
        assert torch.equal(first["bank"][name], second["bank"][name]), name
    # The regions of both ranks entered both banks: the gather really happened.
    seen_together = first["confident_per_class"] + second["confident_per_class"]
    assert (seen_together < 128).all()  # no wrap-around, so every written slot is one region
    assert torch.equal(first["bank"]["count"], seen_together)
    assert (first["confident_per_class"] > 0).all() and (second["confident_per_class"] > 0).all()
    # Epoch 1 started with k-means over the epoch-0 bank: real, shared prototypes.
    assert first["bank"]["prototype_valid"].any() and first["bank"]["prototypes"].abs().sum() > 0


@pytest.mark.slow
def test_each_val_image_is_scored_once_and_train_images_split_between_ranks(ddp_run):
    first, second = rank_records(ddp_run)
    val = first["val_indices"] + second["val_indices"]
    assert sorted(val) == list(range(NUM_VAL))  # no repeat, none missing
    for epoch in (0, 1):
        assert sorted(first["train_indices"][epoch] + second["train_indices"][epoch]) == list(range(48))


@pytest.mark.slow
def test_rank_zero_accumulates_the_maps_of_both_ranks(ddp_run):
    first, second = rank_records(ddp_run)
    written = np.load(ddp_run / "attention" / WRITTEN_FILE)  # (N, C)
    dataset = next((ddp_run.parent / "cache" / "synthetic").iterdir())
    labels = VOCSegmentationDataset(dataset, "train", (dataset / CLASS_NAMES_FILE).read_text().split()).labels
    # Epoch 1 is the last: every tagged class of every image either rank saw was written.
    assert set(first["train_indices"][1]) | set(second["train_indices"][1]) == set(range(48))
    assert np.array_equal(written, labels > 0)

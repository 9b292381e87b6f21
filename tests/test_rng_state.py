"""RNGStateCallback: generator states survive a checkpoint (weights_only) and repeat the same draws."""
# ruff: noqa: NPY002 -- the global NumPy generator is what the callback saves and restores.

import io
import random

import numpy as np
import pytest
import torch

from rca_lightning.callbacks import RNGStateCallback


def draws() -> tuple:
    return (random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist())


def test_restored_states_repeat_the_draws_and_load_with_weights_only():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    buffer = io.BytesIO()
    torch.save({"callback": RNGStateCallback().state_dict()}, buffer)
    expected = draws()
    assert draws() != expected  # the generators moved on

    buffer.seek(0)
    RNGStateCallback().load_state_dict(torch.load(buffer, weights_only=True)["callback"])
    assert draws() == expected


def test_a_checkpoint_of_another_world_size_is_not_restored():
    torch.manual_seed(0)
    state = RNGStateCallback().state_dict()
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with pytest.warns(UserWarning, match="2 processes, this run has 1"):
        RNGStateCallback().load_state_dict({"per_rank": state["per_rank"] * 2})
    assert torch.equal(torch.rand(2), expected)  # still seed 5's stream, not the checkpoint's

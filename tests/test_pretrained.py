"""Pretrained backbones: hub cache, local timm / torchvision files, and a fast clear error offline."""

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.utils._http as hub_http
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from rca_lightning.models import TimmBackbone
from rca_lightning.models.pretrained_weights import PretrainedWeightsUnavailableError
from rca_lightning.utils.errors import InvalidData


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_offline_pretrained_fails_at_once_naming_checkpoint_path(offline, empty_hub_cache):
    started = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailableError) as error:
        TimmBackbone("resnet50", pretrained=True)
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert (
        "\n" not in message
        and "'resnet50'" in message
        and "model.net.backbone.checkpoint_path=FILE" in message
    )


@pytest.mark.slow
def test_unreachable_hub_without_offline_mode_ends_in_the_same_line(empty_hub_cache, monkeypatch):
    """Not offline, nothing cached, the hub out of reach (through a proxy where nothing listens):
    huggingface_hub retries (about 45 s: its policy, HF_HUB_OFFLINE=1 skips it), then the same one line.
    Its backoff's waits are recorded here, not slept: every retry still connects and fails."""
    waits = []
    clock = SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.sleep = waits.append
    monkeypatch.setattr(hub_http, "time", clock)  # the module of huggingface_hub's backoff (http_backoff)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for variable in ("https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    huggingface_hub.close_session()  # its shared HTTP client reads the proxy variables when it is made
    try:
        started = time.perf_counter()
        with pytest.raises(PretrainedWeightsUnavailableError, match="hub is unreachable") as error:
            TimmBackbone("vgg16", output_stride=8, pretrained=True)
        assert time.perf_counter() - started + sum(waits) < 120  # what a user waits, the waits included
        assert "\n" not in str(error.value) and "'vgg16'" in str(error.value)
        assert waits, "huggingface_hub gave up without retrying"
    finally:
        huggingface_hub.close_session()  # the next client is made with the variables restored


def test_weights_in_the_hub_cache_load_without_network(offline, empty_hub_cache):
    """A hub cache laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>/file)."""
    source = timm.create_model("resnet18")
    repo = empty_hub_cache / "models--timm--resnet18.a1_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(source.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    backbone = TimmBackbone("resnet18", output_stride=16, pretrained=True)
    torch.testing.assert_close(backbone.encoder.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    torch.testing.assert_close(backbone.encoder.bn1.running_var, source.bn1.running_var)


def test_torchvision_resnet_state_dict_loads_and_reports_the_classifier(tmp_path, offline):
    torchvision_model = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(torchvision_model.state_dict(), path)
    with pytest.warns(
        UserWarning, match=r"0 missing keys \[\], 2 unexpected keys \['fc.weight', 'fc.bias'\]"
    ):
        backbone = TimmBackbone("resnet18", output_stride=16, pretrained=True, checkpoint_path=path)
    for name, value in backbone.encoder.state_dict().items():
        torch.testing.assert_close(value, torchvision_model.state_dict()[name])


@pytest.mark.slow
def test_torchvision_vgg16_features_load_into_the_dilated_network(tmp_path):
    torchvision_model = torchvision.models.vgg16(weights=None)
    # The fully connected weights are irrelevant to a feature extractor; keep their keys, not their size.
    state = {
        key: value if key.startswith("features.") else torch.zeros(1)
        for key, value in torchvision_model.state_dict().items()
    }
    path = tmp_path / "vgg16-torchvision.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match=r"0 missing keys \[\], 6 unexpected keys \['classifier.0.weight'"):
        backbone = TimmBackbone("vgg16", output_stride=8, checkpoint_path=path)
    for name, value in backbone.encoder.state_dict().items():
        torch.testing.assert_close(value, state[name])
    assert backbone.encoder.features[28].dilation == (2, 2)


def test_safetensors_checkpoint_with_prefix_loads(tmp_path, recwarn):
    source = TimmBackbone("resnet18", output_stride=16)
    path = tmp_path / "backbone.safetensors"
    save_file({f"backbone.{key}": value for key, value in source.encoder.state_dict().items()}, str(path))
    loaded = TimmBackbone("resnet18", output_stride=16, checkpoint_path=path)
    assert not [warning for warning in recwarn if "backbone checkpoint" in str(warning.message)]
    torch.testing.assert_close(loaded.encoder.layer4[1].conv2.weight, source.encoder.layer4[1].conv2.weight)


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"blocks.0.weight": torch.zeros(3)}, path)
    with pytest.raises(InvalidData, match=r"checkpoint_path: none of the 1 keys of .*other\.pth"):
        TimmBackbone("resnet18", checkpoint_path=path)
    resnet34 = timm.create_model("resnet34", features_only=True, out_indices=(-1,)).state_dict()
    torch.save(resnet34, path)  # same key names as resnet50's for many tensors, other shapes
    with pytest.raises(
        InvalidData, match=r"other\.pth has \d+ tensors whose shape differs from backbone 'resnet50'"
    ):
        TimmBackbone("resnet50", checkpoint_path=path)


def test_unreadable_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidData, match=r"checkpoint_path: cannot read .*broken\.pth"):
        TimmBackbone("resnet18", checkpoint_path=path)


@pytest.mark.slow
def test_rca_train_offline_with_pretrained_backbone_stops_with_our_message(tmp_path):
    command = [
        str(Path(sys.executable).with_name("rca-train")),
        "trainer=cpu",
        "model.net.backbone.pretrained=true",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert time.perf_counter() - started < 60  # start-up included; the hub is not retried
    assert "set model.net.backbone.checkpoint_path=FILE" in result.stderr

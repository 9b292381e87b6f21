"""The release's details that are easy to miss, each a named setting: parameter groups by name, the
projection's conv bias, the loader order and min-max normalised attention seeds, which the attention store
records (the loader order and the seeds read are tested with their modules: tests/test_datamodule.py,
tests/test_seed_sources.py). References are written from RCA_REFERENCE.md; the faithful preset must compose
to the release's values, the defaults to the project's."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from rca_lightning.callbacks import AttentionAccumulationCallback
from rca_lightning.models import ProjectionHead, RCANet, TimmBackbone
from rca_lightning.models.parameter_groups import split_parameter_groups
from rca_lightning.pseudo.attention_store import read_index
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR
from tests.console_runs import run_in_process

# ------------------------------------------------------------------------------------ parameter groups
# The release: a parameter whose name contains "weight" (BatchNorm weights included) is in its layer's
# weight group, any other in the bias group; extra* layers (coarse head, class heads, projection) are the
# "new" layers, the aggregation has groups of its own. Every new parameter of tiny_net(), by name.
RELEASE_GROUPS = {
    "coarse_head.layers.0.weight": "new_weight",
    "coarse_head.layers.0.bias": "new_bias",
    "coarse_head.layers.2.weight": "new_weight",
    "coarse_head.layers.2.bias": "new_bias",
    "projection.layers.0.weight": "new_weight",
    "projection.layers.0.bias": "new_bias",
    "projection.layers.1.weight": "new_weight",  # the BatchNorm scale: a "weight"
    "projection.layers.1.bias": "new_bias",
    "projection.layers.3.weight": "new_weight",
    "projection.layers.3.bias": "new_bias",
    "aggregation.query.weight": "aggregation_weight",
    "aggregation.query.bias": "aggregation_bias",
    "aggregation.key.weight": "aggregation_weight",
    "aggregation.key.bias": "aggregation_bias",
    "aggregation.value.weight": "aggregation_weight",
    "aggregation.value.bias": "aggregation_bias",
    "aggregation.context.weight": "aggregation_weight",
    "aggregation.context.bias": "aggregation_bias",
    "aggregation.fuse.weight": "aggregation_weight",
    "aggregation.fuse.bias": "aggregation_bias",
    "class_heads.layers.0.weight": "new_weight",
    "class_heads.layers.0.bias": "new_bias",
    "class_heads.layers.2.weight": "new_weight",
    "class_heads.layers.2.bias": "new_bias",
}


def tiny_net(**options) -> RCANet:
    settings = dict(head_width=4, head_depth=1, projection_dim=6, attention_dim=4, projection_conv_bias=True)
    return RCANet(TimmBackbone("resnet10t", output_stride=8), 2, **{**settings, **options})


def group_of_each_parameter(net: RCANet) -> dict[str, str]:
    group_of = {id(p): group for group, params in net.parameter_groups().items() for p in params}
    return {name: group_of[id(parameter)] for name, parameter in net.named_parameters()}


def test_grouping_by_name_puts_every_parameter_where_the_release_does():
    groups = group_of_each_parameter(tiny_net(parameter_grouping="by_name"))
    backbone = {name: group for name, group in groups.items() if name.startswith("backbone.")}
    assert {name: group for name, group in groups.items() if name not in backbone} == RELEASE_GROUPS
    assert backbone == {name: "backbone_weight" if "weight" in name else "backbone_bias" for name in backbone}
    assert groups["backbone.encoder.bn1.weight"] == "backbone_weight"  # BatchNorm scales: weights


def test_grouping_by_shape_differs_only_in_the_normalisation_scales():
    net = tiny_net()  # the default
    assert net.parameter_grouping == "by_shape"
    by_shape = group_of_each_parameter(net)
    net.parameter_grouping = "by_name"
    by_name = group_of_each_parameter(net)
    differing = sorted(name for name in by_name if by_name[name] != by_shape[name])
    norm_scales = sorted(
        f"{name}.weight" for name, module in net.named_modules() if isinstance(module, nn.BatchNorm2d)
    )
    assert "projection.layers.1.weight" in differing and differing == norm_scales
    assert all(by_shape[name].endswith("_bias") for name in differing)


def test_split_parameter_groups_names_a_wrong_grouping():
    with pytest.raises(InvalidSetting) as error:
        tiny_net(parameter_grouping="by_size")
    assert str(error.value) == "parameter_grouping: expected one of ['by_shape', 'by_name'], got 'by_size'"
    with pytest.raises(InvalidSetting, match="parameter_grouping"):
        split_parameter_groups(nn.Linear(2, 2), nn.Identity(), grouping="name")


# ------------------------------------------------------------------------------ the projection's conv bias
def release_projection(features: int, width: int) -> nn.Sequential:
    """The release's extra_F: conv3x3 with a bias, BatchNorm, ReLU, conv3x3."""
    return nn.Sequential(
        nn.Conv2d(features, width, kernel_size=3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(True),
        nn.Conv2d(width, width, kernel_size=3, padding=1),
    )


def test_projection_with_conv_bias_is_the_release_projection():
    head = ProjectionHead(8, 6, conv_bias=True)
    reference = release_projection(8, 6)
    reference.load_state_dict(head.layers.state_dict())  # strict: the same parameters and buffers
    features = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(head(features), reference(features))
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*0\.bias"):
        reference.load_state_dict(ProjectionHead(8, 6).layers.state_dict())
    # On the release's 512-channel features, 512 parameters more.
    count = [sum(p.numel() for p in ProjectionHead(512, 512, conv_bias=bias).parameters()) for bias in (0, 1)]
    assert count[1] - count[0] == 512


def test_the_conv_bias_before_batchnorm_changes_no_training_output():
    head = ProjectionHead(8, 6, conv_bias=True).train()
    features = torch.randn(4, 8, 5, 5)
    with torch.no_grad():
        head.layers[0].bias.zero_()
        without = head(features)
        head.layers[0].bias.normal_()
        with_bias = head(features)
    torch.testing.assert_close(with_bias, without, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- how attention becomes seeds
def test_the_attention_store_records_how_its_maps_are_read_as_seeds(tmp_path):
    assert AttentionAccumulationCallback(tmp_path).seed_normalisation == "divide_255"
    for value in ("divide_255", "min_max"):
        callback = AttentionAccumulationCallback(tmp_path / value, resolution=2, seed_normalisation=value)
        callback.create_storage(["a", "b"], ["disc"])
        assert read_index(tmp_path / value)["seed_normalisation"] == value
    with pytest.raises(InvalidSetting) as error:
        AttentionAccumulationCallback(tmp_path, seed_normalisation="minmax")
    assert str(error.value) == (
        "callbacks.attention_accumulation.seed_normalisation='minmax': expected one of "
        "['divide_255', 'min_max']"
    )


# --------------------------------------------------------------------------------------- the presets
def compose_train(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_the_faithful_preset_takes_the_release_values_and_the_defaults_the_project():
    release = compose_train("experiment=voc_rca_vgg16", "data.root=/nonexistent")
    assert release.model.net.parameter_grouping == "by_name"
    assert release.model.net.projection_conv_bias is True
    assert release.data.shuffle is False
    assert release.callbacks.attention_accumulation.seed_normalisation == "min_max"
    for experiment in ("synthetic", "voc_rca_resnet101", "coco_rca_eps"):
        cfg = compose_train(f"experiment={experiment}", "callbacks=[default,attention_accumulation]")
        assert cfg.model.net.parameter_grouping == "by_shape", experiment
        assert cfg.model.net.projection_conv_bias is False, experiment
        assert cfg.data.shuffle is True, experiment
        assert cfg.callbacks.attention_accumulation.seed_normalisation == "divide_255", experiment


@pytest.mark.slow
def test_the_faithful_preset_job_config_shows_the_release_seeds(tmp_path):
    """What docs/faithful-preset.md tells a user to look at: ``rca-train experiment=voc_rca_vgg16 ... --cfg
    job`` (on a data root that exists, empty)."""
    result = run_in_process(
        "rca-train", "experiment=voc_rca_vgg16", f"data.root={tmp_path}", "--cfg", "job", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # callbacks.attention_accumulation.seed_normalisation, the only key of that name.
    assert "\n  attention_accumulation:\n" in result.stdout, result.stdout[-2000:]
    assert "\n    seed_normalisation: min_max\n" in result.stdout, result.stdout[-2000:]

"""Segmentation networks: DeepLab-v2 (ASPP-L) and DeepLab-v3+ on timm backbones."""

import pytest
import torch
from torch import nn

from rca_lightning.models import TimmBackbone
from rca_lightning.models.deeplab_v2 import ASPPv2, DeepLabV2
from rca_lightning.models.deeplab_v3plus import ASPPv3, DeepLabV3Plus
from rca_lightning.models.multi_level_backbone import TimmMultiLevelBackbone
from rca_lightning.utils.errors import InvalidSetting
from tests.references import reference_dilated_conv3x3

NUM_CLASSES = 3  # foreground; the nets predict background + 3


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_v3plus(output_stride: int = 16, **kwargs) -> DeepLabV3Plus:
    return DeepLabV3Plus(
        TimmMultiLevelBackbone("resnet18", output_stride=output_stride),
        NUM_CLASSES,
        aspp_channels=16,
        low_level_channels=8,
        decoder_channels=16,
        **kwargs,
    )


def assert_trains(net: nn.Module, images: torch.Tensor) -> None:
    """Logits are (B, C+1, H, W) and finite; every trainable parameter gets a finite gradient, non-zero for
    the stem and the new layers (timm zero-initialises each residual block's last BN, which blocks the
    gradient of the block's inner convolutions at initialisation)."""
    logits = net(images)
    assert logits.shape == (images.shape[0], NUM_CLASSES + 1, *images.shape[-2:])
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    trainable = {name: p for name, p in net.named_parameters() if p.requires_grad}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
    must_move = ["backbone.encoder.conv1.weight"] + [n for n in trainable if not n.startswith("backbone.")]
    assert [name for name in must_move if not trainable[name].grad.any()] == []


def test_deeplab_v2_shapes_finite_gradients() -> None:
    net = DeepLabV2(TimmBackbone("resnet18", output_stride=8), NUM_CLASSES)
    assert_trains(net, torch.randn(2, 3, 64, 64))
    assert [branch.dilation for branch in net.aspp.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]


def test_deeplab_v3plus_shapes_finite_gradients() -> None:
    net = tiny_v3plus()
    assert_trains(net, torch.randn(2, 3, 64, 64))
    levels = net.backbone(torch.randn(1, 3, 64, 64))  # every map, shallow to deep
    assert [level.shape[-1] for level in levels] == [64 // s for s in net.backbone.level_strides]
    assert [level.shape[1] for level in levels] == net.backbone.level_channels
    low_level = levels[net.backbone.low_level_index]
    assert low_level.shape[-2:] == (16, 16) and levels[-1].shape[-2:] == (4, 4)
    assert [branch[0].dilation for branch in net.aspp.branches[1:]] == [(6, 6), (12, 12), (18, 18)]


def test_deeplab_v3plus_output_stride_8_doubles_the_rates() -> None:
    net = tiny_v3plus(output_stride=8)
    assert [branch[0].dilation for branch in net.aspp.branches[1:]] == [(12, 12), (24, 24), (36, 36)]
    assert net(torch.randn(2, 3, 48, 40)).shape == (2, NUM_CLASSES + 1, 48, 40)  # any size, not only squares


def test_aspp_v2_is_the_sum_of_dilated_classifiers() -> None:
    aspp = ASPPv2(in_channels=4, num_outputs=3, dilations=(1, 2, 3)).double()
    for branch in aspp.branches:  # the recipe's init has zero biases; make them count
        nn.init.normal_(branch.bias)
    features = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    expected = sum(
        reference_dilated_conv3x3(features, branch.weight, branch.bias, rate)
        for branch, rate in zip(aspp.branches, (1, 2, 3), strict=True)
    )
    torch.testing.assert_close(aspp(features), expected, atol=1e-5, rtol=1e-5)


def test_aspp_v3_image_pooling_sees_the_whole_image() -> None:
    aspp = ASPPv3(in_channels=4, out_channels=8, dilations=(1, 2)).eval()
    features = torch.randn(1, 4, 9, 9)
    changed = features.clone()
    changed[..., 0, 0] += 10.0  # far outside every local branch's reach of pixel (8, 8)
    assert not torch.allclose(aspp(features)[..., 8, 8], aspp(changed)[..., 8, 8])
    assert aspp(features).shape == (1, 8, 9, 9)


@pytest.mark.parametrize(
    "make_net", [lambda: DeepLabV2(TimmBackbone("resnet18", 8), NUM_CLASSES), tiny_v3plus]
)
def test_parameter_groups_partition_backbone_and_head(make_net) -> None:
    net = make_net()
    groups = net.parameter_groups()
    listed = [id(p) for params in groups.values() for p in params]
    assert sorted(listed) == sorted(id(p) for p in net.parameters())  # each parameter exactly once
    backbone = {id(p) for p in net.backbone.parameters()}
    assert all(id(p) in backbone for p in groups["backbone_weight"] + groups["backbone_bias"])
    assert not any(id(p) in backbone for p in groups["new_weight"] + groups["new_bias"])
    assert all(p.ndim <= 1 for p in groups["backbone_bias"] + groups["new_bias"])
    assert groups["new_weight"] and groups["backbone_weight"]


def test_frozen_backbone_norm_keeps_statistics_and_leaves_the_groups() -> None:
    net = DeepLabV2(TimmBackbone("resnet18", 8), NUM_CLASSES, freeze_backbone_norm=True).train()
    norm = net.backbone.encoder.bn1
    before = norm.running_mean.clone()
    net(torch.randn(2, 3, 32, 32) * 5 + 3)
    assert not norm.training and torch.equal(norm.running_mean, before)
    listed = {id(p) for params in net.parameter_groups().values() for p in params}
    assert id(norm.weight) not in listed and not norm.weight.requires_grad
    assert id(net.backbone.encoder.conv1.weight) in listed


def test_multi_level_backbone_rejects_bad_settings() -> None:
    with pytest.raises(InvalidSetting, match=r"output_stride=4 is not supported for backbone 'resnet18'"):
        TimmMultiLevelBackbone("resnet18", output_stride=4)
    with pytest.raises(
        InvalidSetting, match="name: expected a timm backbone with multi-level features, got 'vgg16'"
    ):
        TimmMultiLevelBackbone("vgg16")
    with pytest.raises(
        InvalidSetting, match=r"low_level_stride=3 .*'resnet18'; expected one of \[2, 4, 8, 16\]"
    ):
        TimmMultiLevelBackbone("resnet18", low_level_stride=3)
    with pytest.raises(InvalidSetting, match="num_classes: expected at least one foreground class, got 0"):
        DeepLabV2(TimmBackbone("resnet18", 8), 0)


def test_multi_level_backbone_loads_a_local_checkpoint(tmp_path) -> None:
    source = TimmMultiLevelBackbone("resnet18").eval()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source.encoder.state_dict()}, path)
    loaded = TimmMultiLevelBackbone("resnet18", checkpoint_path=path).eval()
    images = torch.randn(1, 3, 32, 32)
    for expected, actual in zip(source(images), loaded(images), strict=True):
        torch.testing.assert_close(actual, expected)

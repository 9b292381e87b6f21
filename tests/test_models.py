"""Models: backbone strides and checkpoints, grouped per-class heads, aggregation, the full RCANet."""

import itertools
import math

import pytest
import torch
from torch import nn

from rca_lightning.models import (
    ConvHead,
    PerClassHeads,
    ProjectionHead,
    RCANet,
    RCAOutput,
    SemanticAggregation,
    TimmBackbone,
)
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from tests.references import reference_per_class_heads, reference_semantic_aggregation

NUM_CLASSES = 3
NUM_PROTOTYPES = 4


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def random_prototypes(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    prototypes = torch.randn(NUM_CLASSES, NUM_PROTOTYPES, dim)
    valid = torch.ones(NUM_CLASSES, NUM_PROTOTYPES, dtype=torch.bool)
    valid[0, 2:] = False  # class 0: two prototypes only
    valid[2] = False  # class 2: none yet
    return prototypes, valid


# ---------------------------------------------------------------------------------------------- backbone
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet_backbone_output_stride(output_stride: int) -> None:
    backbone = TimmBackbone("resnet18", output_stride=output_stride)
    features = backbone(torch.randn(2, 3, 64, 64))
    assert backbone.out_channels == 512
    assert features.shape == (2, 512, 64 // output_stride, 64 // output_stride)


@pytest.mark.parametrize(("name", "output_stride"), [("resnet18", 4), ("resnet18", 12), ("vgg16", 16)])
def test_backbone_rejects_unsupported_stride(name: str, output_stride: int) -> None:
    with pytest.raises(InvalidSetting, match=rf"output_stride={output_stride}.*'{name}'.*allowed") as error:
        TimmBackbone(name, output_stride=output_stride)
    assert "\n" not in str(error.value)


def test_backbone_rejects_unknown_name() -> None:
    with pytest.raises(InvalidSetting, match="name: unknown timm backbone 'resnet_does_not_exist'; expected"):
        TimmBackbone("resnet_does_not_exist")


def test_vgg16_is_the_dilated_stride_8_network() -> None:
    backbone = TimmBackbone("vgg16", output_stride=8)
    layers = list(backbone.encoder.features)
    pools = [layer for layer in layers if isinstance(layer, nn.MaxPool2d)]
    assert [pool.stride for pool in pools] == [2, 2, 2, 1]
    assert (pools[-1].kernel_size, pools[-1].padding) == (3, 1)
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
    assert [conv.dilation for conv in convs] == [(1, 1)] * 10 + [(2, 2)] * 3
    assert [conv.padding for conv in convs[-3:]] == [(2, 2)] * 3
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 368, 368))
    assert backbone.out_channels == 512
    assert features.shape == (1, 512, 46, 46)


def test_backbone_checkpoint_loads_and_reports_keys(tmp_path) -> None:
    source = TimmBackbone("resnet18", output_stride=16)
    state = dict(source.encoder.state_dict())
    del state["conv1.weight"]
    state["fc.weight"] = torch.zeros(10, 512)  # a classifier the features-only model does not have
    path = tmp_path / "backbone.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.warns(
        UserWarning, match=r"1 missing keys \['conv1.weight'\], 1 unexpected keys \['fc.weight'\]"
    ):
        loaded = TimmBackbone("resnet18", output_stride=16, checkpoint_path=path)
    torch.testing.assert_close(loaded.encoder.layer4[1].conv2.weight, source.encoder.layer4[1].conv2.weight)
    assert not torch.equal(loaded.encoder.conv1.weight, source.encoder.conv1.weight)


def test_backbone_checkpoint_nested_under_model_loads_silently(tmp_path, recwarn) -> None:
    source = TimmBackbone("resnet18", output_stride=16)
    path = tmp_path / "backbone.pt"
    torch.save({"model": source.state_dict()}, path)  # keys prefixed with "encoder."
    loaded = TimmBackbone("resnet18", output_stride=16, checkpoint_path=path)
    assert not [warning for warning in recwarn if "backbone checkpoint" in str(warning.message)]
    for name, parameter in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], parameter)


def test_backbone_missing_checkpoint_names_the_file(tmp_path) -> None:
    with pytest.raises(
        MissingInput, match="checkpoint_path: .*nope.pt not found: expected a backbone weight file"
    ):
        TimmBackbone("resnet18", checkpoint_path=tmp_path / "nope.pt")


# ------------------------------------------------------------------------------------------------- heads
def test_conv_head_shape_and_depth() -> None:
    head = ConvHead(in_channels=8, num_classes=5, width=16, depth=2)
    assert head(torch.randn(2, 8, 6, 7)).shape == (2, 5, 6, 7)
    assert sum(isinstance(layer, nn.Conv2d) for layer in head.layers) == 3
    classifier = ConvHead(in_channels=8, num_classes=5, width=16, depth=0)  # EPS's fc8: one 1x1 conv
    assert [type(layer) for layer in classifier.layers] == [nn.Conv2d]
    assert classifier.layers[0].kernel_size == (1, 1) and classifier.layers[0].in_channels == 8


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_per_class_heads_equal_independent_stacks(depth: int) -> None:
    in_channels, width, num_classes = 8, 4, 5
    independent = [ConvHead(in_channels, 1, width, depth) for _ in range(num_classes)]
    grouped = PerClassHeads(in_channels, num_classes, width, depth)
    grouped_convs = [layer for layer in grouped.layers if isinstance(layer, nn.Conv2d)]
    assert [conv.groups for conv in grouped_convs] == [1] + [num_classes] * depth
    with torch.no_grad():
        for position, grouped_conv in enumerate(grouped_convs):
            stacks = [
                [layer for layer in head.layers if isinstance(layer, nn.Conv2d)] for head in independent
            ]
            grouped_conv.weight.copy_(torch.cat([convs[position].weight for convs in stacks]))
            grouped_conv.bias.copy_(torch.cat([convs[position].bias for convs in stacks]))
        features = torch.randn(2, in_channels, 6, 5)
        expected = reference_per_class_heads(features, independent)
        actual = grouped(features)
    assert actual.shape == (2, num_classes, 6, 5)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_per_class_heads_do_not_mix_classes() -> None:
    grouped = PerClassHeads(in_channels=4, num_classes=3, width=2, depth=3)
    features = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        before = grouped(features)
        grouped.layers[2].weight[2:4].add_(1.0)  # class 1's second conv only
        after = grouped(features)
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]])
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_heads_reject_bad_sizes() -> None:
    with pytest.raises(InvalidSetting, match="depth: expected a non-negative integer, got -1"):
        PerClassHeads(4, 3, 2, depth=-1)
    with pytest.raises(InvalidSetting, match="width: expected a positive integer, got 0"):
        ConvHead(4, 3, 0, depth=1)


def test_projection_head_shape() -> None:
    projection = ProjectionHead(in_channels=8, out_channels=6)
    assert projection(torch.randn(2, 8, 5, 4)).shape == (2, 6, 5, 4)


# ------------------------------------------------------------------------------------------- aggregation
@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_aggregation_matches_per_pixel_reference(attention: str) -> None:
    aggregation = SemanticAggregation(
        in_channels=6, prototype_dim=5, attention_dim=4, attention=attention
    ).double()
    features = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    prototypes, valid = random_prototypes(5)
    prototypes = prototypes.double()
    with torch.no_grad():
        actual = aggregation(features, prototypes, valid)
        expected = reference_semantic_aggregation(aggregation, features, prototypes, valid)
        all_valid = aggregation(features, prototypes, None)
        expected_all_valid = reference_semantic_aggregation(aggregation, features, prototypes, None)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(all_valid, expected_all_valid, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(actual, all_valid)  # the mask matters


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_aggregation_ignores_invalid_prototypes(attention: str) -> None:
    aggregation = SemanticAggregation(6, 5, 4, attention=attention)
    features = torch.randn(2, 6, 3, 3)
    prototypes, valid = random_prototypes(5)
    changed = prototypes.clone()
    changed[~valid] = 1000.0
    with torch.no_grad():
        torch.testing.assert_close(
            aggregation(features, changed, valid), aggregation(features, prototypes, valid)
        )


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_aggregation_without_valid_prototypes_uses_zero_context(attention: str) -> None:
    aggregation = SemanticAggregation(6, 5, 4, attention=attention)
    features = torch.randn(2, 6, 3, 3)
    prototypes = torch.randn(NUM_CLASSES, NUM_PROTOTYPES, 5)
    none_valid = torch.zeros(NUM_CLASSES, NUM_PROTOTYPES, dtype=torch.bool)
    with torch.no_grad():
        expected = aggregation.fuse(torch.cat([features, torch.zeros_like(features)], dim=1))
        torch.testing.assert_close(aggregation(features, None, None), expected)
        torch.testing.assert_close(aggregation(features, prototypes, none_valid), expected)
        torch.testing.assert_close(
            aggregation(features, None, None),
            reference_semantic_aggregation(aggregation, features, None, None),
        )


def test_aggregation_without_prototypes_keeps_every_parameter_in_the_graph() -> None:
    aggregation = SemanticAggregation(6, 5, 4)
    aggregation(torch.randn(1, 6, 3, 3)).sum().backward()
    assert all(parameter.grad is not None for parameter in aggregation.parameters())
    assert aggregation.fuse.weight.grad.abs().sum() > 0


def test_aggregation_rejects_bad_prototype_shapes() -> None:
    aggregation = SemanticAggregation(6, 5, 4)
    features = torch.randn(1, 6, 3, 3)
    with pytest.raises(ValueError, match=r"prototypes: expected shape \(C, K, 5\), got \(3, 4, 7\)"):
        aggregation(features, torch.randn(3, 4, 7))
    with pytest.raises(ValueError, match="prototype_valid: expected shape"):
        aggregation(features, torch.randn(3, 4, 5), torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(InvalidSetting, match="attention: expected one of"):
        SemanticAggregation(6, 5, 4, attention="cosine")


# ------------------------------------------------------------------------------------------------ RCANet
def tiny_net(output_stride: int = 8, **options) -> RCANet:
    defaults = dict(head_width=16, head_depth=2, projection_dim=12, attention_dim=8)
    defaults.update(options)
    return RCANet(TimmBackbone("resnet18", output_stride=output_stride), NUM_CLASSES, **defaults)


COMBINATIONS = [
    dict(head=head, aggregation=aggregation, embedding_source=source, attention=attention)
    for head, source in itertools.product(["per_class", "shared"], ["projection", "backbone"])
    for aggregation, attention in [(False, "softmax"), (True, "softmax"), (True, "linear")]
]


@pytest.mark.parametrize("options", COMBINATIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_rca_net_shapes_and_finiteness(options: dict) -> None:
    # Stored raw features are compared with projected queries, so the widths must agree.
    projection_dim = 12 if options["embedding_source"] == "projection" else 512
    net = tiny_net(projection_dim=projection_dim, **options)
    assert net.embedding_dim == projection_dim
    prototypes, valid = random_prototypes(net.embedding_dim)
    output = net(torch.randn(2, 3, 64, 64), prototypes, valid)
    assert isinstance(output, RCAOutput)
    assert output.features.shape == (2, 512, 8, 8)
    assert output.projected.shape == (2, projection_dim, 8, 8)
    assert output.coarse_cams.shape == output.cams.shape == (2, NUM_CLASSES, 8, 8)
    assert output.coarse_logits.shape == output.logits.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(output.logits, output.cams.mean(dim=(2, 3)))
    torch.testing.assert_close(output.coarse_logits, output.coarse_cams.mean(dim=(2, 3)))
    assert all(torch.isfinite(tensor).all() for tensor in output)
    assert (net.aggregation is not None) == options["aggregation"]
    # Maps that mean something: each image gets its own maps, each class its own, and no map is constant.
    assert not torch.allclose(output.cams[0], output.cams[1])
    assert not torch.allclose(output.cams[:, 0], output.cams[:, 1])
    assert (output.cams.flatten(2).std(-1) > 0).all() and (output.projected.flatten(2).std(-1) > 0).all()


@pytest.mark.parametrize("coarse_head", [True, False])
def test_rca_net_background_channel_is_last_and_gets_no_score(coarse_head: bool) -> None:
    net = tiny_net(background_channel=True, coarse_head=coarse_head, head="shared", init="xavier")
    output = net(torch.randn(2, 3, 64, 64), *random_prototypes(net.embedding_dim))
    assert output.cams.shape == (2, NUM_CLASSES + 1, 8, 8)
    torch.testing.assert_close(output.logits, output.cams[:, :NUM_CLASSES].mean(dim=(2, 3)))
    if coarse_head:
        assert output.coarse_cams.shape == (2, NUM_CLASSES + 1, 8, 8)
        torch.testing.assert_close(output.coarse_logits, output.coarse_cams[:, :NUM_CLASSES].mean(dim=(2, 3)))
    else:
        assert output.coarse_cams is None and output.coarse_logits is None and net.coarse_head is None
    # Xavier-uniform new convs: bounded by sqrt(6 / (fan_in + fan_out)).
    classifier = [m for m in net.class_heads.modules() if isinstance(m, nn.Conv2d)][-1]
    fan_in, fan_out = classifier.in_channels, classifier.out_channels
    assert float(classifier.weight.abs().max()) <= math.sqrt(6 / (fan_in + fan_out))


def test_rca_net_backbone_source_needs_projection_of_backbone_width() -> None:
    with pytest.raises(InvalidSetting, match=r"projection_dim: expected 512 .* got 12"):
        tiny_net(embedding_source="backbone", projection_dim=12)


@pytest.mark.parametrize("head", ["per_class", "shared"])
def test_rca_net_gradients_reach_backbone_and_every_head(head: str) -> None:
    net = tiny_net(head=head, aggregation=True)
    prototypes, valid = random_prototypes(net.embedding_dim)
    output = net(torch.randn(2, 3, 64, 64), prototypes, valid)
    (output.logits.sum() + output.coarse_logits.sum() + output.projected.square().mean()).backward()
    for name in ["backbone", "coarse_head", "projection", "aggregation", "class_heads"]:
        module = getattr(net, name)
        assert all(parameter.grad is not None for parameter in module.parameters()), name
        assert sum(parameter.grad.abs().sum() for parameter in module.parameters()) > 0, name


def test_rca_net_without_prototypes_runs_and_ignores_prototypes_without_aggregation() -> None:
    net = tiny_net(aggregation=True)
    assert torch.isfinite(net(torch.randn(1, 3, 64, 64)).cams).all()
    plain = tiny_net(aggregation=False).eval()
    images = torch.randn(1, 3, 64, 64)
    prototypes, valid = random_prototypes(plain.embedding_dim)
    with torch.no_grad():
        torch.testing.assert_close(plain(images).cams, plain(images, prototypes, valid).cams)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_rca_net_map_size_follows_output_stride(output_stride: int) -> None:
    net = tiny_net(output_stride=output_stride)
    output = net(torch.randn(1, 3, 64, 64))
    size = 64 // output_stride
    assert (
        output.cams.shape[-2:] == output.coarse_cams.shape[-2:] == output.projected.shape[-2:] == (size, size)
    )


def test_rca_net_parameter_groups_cover_every_parameter_once() -> None:
    net = tiny_net(aggregation=True)
    groups = net.parameter_groups()
    assert set(groups) == {
        f"{part}_{kind}" for part in ("backbone", "aggregation", "new") for kind in ("weight", "bias")
    }
    grouped_ids = [id(parameter) for group in groups.values() for parameter in group]
    assert len(grouped_ids) == len(set(grouped_ids)) == len(list(net.parameters()))
    assert set(grouped_ids) == {id(parameter) for parameter in net.parameters()}
    backbone_ids = {id(parameter) for parameter in net.backbone.parameters()}
    assert {id(p) for p in groups["backbone_weight"] + groups["backbone_bias"]} == backbone_ids
    assert id(net.backbone.encoder.bn1.weight) in {
        id(p) for p in groups["backbone_bias"]
    }  # norm -> bias group
    assert id(net.projection.layers[1].weight) in {id(p) for p in groups["new_bias"]}
    assert id(net.class_heads.layers[0].bias) in {id(p) for p in groups["new_bias"]}
    assert all(parameter.ndim > 1 for parameter in groups["backbone_weight"] + groups["new_weight"])
    aggregation_ids = {id(p) for p in groups["aggregation_weight"] + groups["aggregation_bias"]}
    assert aggregation_ids == {id(parameter) for parameter in net.aggregation.parameters()}
    assert set(tiny_net(aggregation=False).parameter_groups()) == {
        "backbone_weight",
        "backbone_bias",
        "new_weight",
        "new_bias",
    }


# The release's initialisation, module by module for tiny_net(head_depth=2): every new conv weight redrawn
# from N(0, 0.01); what it leaves alone keeps PyTorch's initialisation.
NORMAL_INIT_CONVS = [
    "coarse_head.layers.0",
    "coarse_head.layers.2",
    "coarse_head.layers.4",
    "projection.layers.0",
    "projection.layers.3",
    "aggregation.query",
    "aggregation.context",
    "aggregation.fuse",
    "class_heads.layers.0",
    "class_heads.layers.2",
    "class_heads.layers.4",
]
DEFAULT_INIT_LAYERS = ["aggregation.key", "aggregation.value", "projection.layers.1"]  # Linear, Linear, BN


def test_normal_init_redraws_new_conv_weights_only() -> None:
    options = dict(head_width=64, projection_dim=64, attention_dim=64, aggregation=True)
    torch.manual_seed(3)
    default = tiny_net(**options)
    torch.manual_seed(3)
    normal = tiny_net(init="normal", init_std=0.01, **options)
    default_state, normal_state = default.state_dict(), normal.state_dict()
    modules = dict(normal.named_modules())
    redrawn = [f"{name}.weight" for name in NORMAL_INIT_CONVS]
    for key in redrawn:
        weight = normal_state[key]
        assert not torch.equal(weight, default_state[key]), key
        if weight.numel() >= 10_000:  # enough draws for a tight estimate of the spread
            assert float(weight.std()) == pytest.approx(0.01, rel=0.03), key
            assert abs(float(weight.mean())) < 3e-4, key
        assert float(weight.abs().max()) < 0.07, key
    for key in default_state:  # backbone, conv biases, key / value layers and BN: as PyTorch made them
        if key not in redrawn:
            assert torch.equal(normal_state[key], default_state[key]), key
    assert all(isinstance(modules[name], nn.Conv2d) for name in NORMAL_INIT_CONVS)
    assert all(not isinstance(modules[name], nn.Conv2d) for name in DEFAULT_INIT_LAYERS)
    assert {
        name for name, m in normal.named_modules() if isinstance(m, nn.Conv2d) and "backbone" not in name
    } == set(NORMAL_INIT_CONVS)


def test_rca_net_rejects_bad_options() -> None:
    backbone = TimmBackbone("resnet18")
    with pytest.raises(InvalidSetting, match=r"head: expected one of \['per_class', 'shared'\], got 'dense'"):
        RCANet(backbone, NUM_CLASSES, head="dense")
    with pytest.raises(InvalidSetting, match="embedding_source: expected one of"):
        RCANet(backbone, NUM_CLASSES, embedding_source="memory")
    with pytest.raises(InvalidSetting, match="backbone: expected a module with an int `out_channels`"):
        RCANet(nn.Identity(), NUM_CLASSES)
    with pytest.raises(InvalidSetting, match="init: expected one of"):
        RCANet(backbone, NUM_CLASSES, init="kaiming")
    with pytest.raises(InvalidSetting, match="init_std: expected a positive number, got 0.0"):
        RCANet(backbone, NUM_CLASSES, init_std=0.0)
    with pytest.raises(InvalidSetting, match="head_depth: expected a non-negative integer, got -1"):
        RCANet(backbone, NUM_CLASSES, head_depth=-1)

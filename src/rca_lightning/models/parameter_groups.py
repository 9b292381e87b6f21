"""Split a model's trainable parameters into the backbone / new-layer, weight / bias groups of the recipes."""

from collections.abc import Mapping

from torch import nn


def split_parameter_groups(
    model: nn.Module, backbone: nn.Module, parts: Mapping[str, nn.Module] | None = None
) -> dict[str, list[nn.Parameter]]:
    """Group ``model``'s trainable parameters for per-group learning rates.

    "backbone" means the parameters of ``backbone``; each name of ``parts`` the parameters of its module;
    "new" every other layer. One-dimensional parameters (biases, normalisation weights) go to the
    ``*_bias`` lists; frozen parameters are left out.

    Args:
        model: the network.
        backbone: its pretrained part.
        parts: further named sub-modules that get groups of their own (e.g. ``{"aggregation": ...}``).

    Returns:
        dict with keys ``backbone_weight``, ``backbone_bias``, ``<part>_weight``, ``<part>_bias`` for each
        part, ``new_weight``, ``new_bias``.
    """
    named_modules = {"backbone": backbone, **(parts or {})}
    groups: dict[str, list[nn.Parameter]] = {
        f"{part}_{kind}": [] for part in [*named_modules, "new"] for kind in ("weight", "bias")
    }
    part_of = {
        id(parameter): part for part, module in named_modules.items() for parameter in module.parameters()
    }
    for parameter in model.parameters():  # deduplicated, so shared parameters are listed once
        if parameter.requires_grad:
            kind = "bias" if parameter.ndim <= 1 else "weight"
            groups[f"{part_of.get(id(parameter), 'new')}_{kind}"].append(parameter)
    return groups

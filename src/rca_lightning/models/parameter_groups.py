"""Split a model's trainable parameters into the backbone / new-layer, weight / bias groups of the recipes."""

from collections.abc import Mapping

from torch import nn

from rca_lightning.utils.errors import InvalidSetting

# How a parameter is sorted into a ``*_weight`` or ``*_bias`` group: ``by_shape`` (one-dimensional
# parameters, biases and normalisation scales, are biases) or ``by_name`` (the release's rule: a parameter
# whose name contains "weight" is a weight, normalisation scales included; any other is a bias).
PARAMETER_GROUPINGS = ("by_shape", "by_name")


def check_parameter_grouping(grouping: str) -> str:
    """``grouping`` if it is one of :data:`PARAMETER_GROUPINGS`, else InvalidSetting naming the choices."""
    if grouping not in PARAMETER_GROUPINGS:
        raise InvalidSetting(
            f"parameter_grouping: expected one of {list(PARAMETER_GROUPINGS)}, got {grouping!r}"
        )
    return grouping


def split_parameter_groups(
    model: nn.Module,
    backbone: nn.Module,
    parts: Mapping[str, nn.Module] | None = None,
    grouping: str = "by_shape",
) -> dict[str, list[nn.Parameter]]:
    """Group ``model``'s trainable parameters for per-group learning rates.

    "backbone" means the parameters of ``backbone``; each name of ``parts`` the parameters of its module;
    "new" every other layer. Within each, ``grouping`` picks the ``*_weight`` or ``*_bias`` list
    (:data:`PARAMETER_GROUPINGS`): ``by_shape`` sends one-dimensional parameters (biases, normalisation
    weights) to ``*_bias``, ``by_name`` every parameter whose name in ``model`` lacks "weight" (so a
    BatchNorm weight is a weight). Frozen parameters are left out.

    Args:
        model: the network.
        backbone: its pretrained part.
        parts: further named sub-modules that get groups of their own (e.g. ``{"aggregation": ...}``).
        grouping: ``"by_shape"`` or ``"by_name"``.

    Returns:
        dict with keys ``backbone_weight``, ``backbone_bias``, ``<part>_weight``, ``<part>_bias`` for each
        part, ``new_weight``, ``new_bias``.
    """
    check_parameter_grouping(grouping)
    named_modules = {"backbone": backbone, **(parts or {})}
    groups: dict[str, list[nn.Parameter]] = {
        f"{part}_{kind}": [] for part in [*named_modules, "new"] for kind in ("weight", "bias")
    }
    part_of = {
        id(parameter): part for part, module in named_modules.items() for parameter in module.parameters()
    }
    for name, parameter in model.named_parameters():  # deduplicated: a shared parameter is listed once
        if parameter.requires_grad:
            is_weight = "weight" in name if grouping == "by_name" else parameter.ndim > 1
            kind = "weight" if is_weight else "bias"
            groups[f"{part_of.get(id(parameter), 'new')}_{kind}"].append(parameter)
    return groups

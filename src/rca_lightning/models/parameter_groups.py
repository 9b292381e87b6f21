"""Split a model's trainable parameters into the backbone / new-layer, weight / bias groups of the recipes."""

from torch import nn


def split_parameter_groups(model: nn.Module, backbone: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Group ``model``'s trainable parameters for per-group learning rates.

    "backbone" means the parameters of ``backbone``; "new" every other layer. One-dimensional parameters
    (biases, normalisation weights) go to the ``*_bias`` lists; frozen parameters are left out.

    Returns:
        dict with keys ``backbone_weight``, ``backbone_bias``, ``new_weight``, ``new_bias``.
    """
    groups: dict[str, list[nn.Parameter]] = {
        "backbone_weight": [],
        "backbone_bias": [],
        "new_weight": [],
        "new_bias": [],
    }
    backbone_ids = {id(parameter) for parameter in backbone.parameters()}
    for parameter in model.parameters():  # deduplicated, so shared parameters are listed once
        if parameter.requires_grad:
            part = "backbone" if id(parameter) in backbone_ids else "new"
            kind = "bias" if parameter.ndim <= 1 else "weight"
            groups[f"{part}_{kind}"].append(parameter)
    return groups

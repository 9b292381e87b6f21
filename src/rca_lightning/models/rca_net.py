"""The RCA network: backbone -> (coarse head, projection) and backbone -> aggregation -> class heads.

With ``background_channel`` the heads give one more map, the background (last), as EPS's classifier does;
with every RCA part off the network is plain CAM (or EPS with a background channel).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from rca_lightning.models.aggregation import SemanticAggregation
from rca_lightning.models.heads import ConvHead, PerClassHeads
from rca_lightning.models.parameter_groups import check_parameter_grouping, split_parameter_groups
from rca_lightning.models.projection import ProjectionHead
from rca_lightning.utils.errors import InvalidSetting

HEAD_TYPES = ("per_class", "shared")
EMBEDDING_SOURCES = ("projection", "backbone")
INIT_SCHEMES = ("default", "normal", "xavier")


class RCAOutput(NamedTuple):
    """Everything one forward pass of ``RCANet`` produces.

    C' is the number of head outputs: C, or C + 1 with a background channel (the last one).

    Attributes:
        features: (B, F, h, w) raw backbone features.
        projected: (B, P, h, w) projection of the raw features (contrast queries).
        coarse_cams: (B, C', h, w) coarse head on the raw features, or None (built without one).
        cams: (B, C', h, w) class heads on the fused (or raw, without aggregation) features.
        coarse_logits: (B, C) spatial mean of the foreground ``coarse_cams``, or None.
        logits: (B, C) spatial mean of the foreground ``cams`` (the background channel gets no score).
    """

    features: torch.Tensor
    projected: torch.Tensor
    coarse_cams: torch.Tensor | None
    cams: torch.Tensor
    coarse_logits: torch.Tensor | None
    logits: torch.Tensor


class RCANet(nn.Module):
    """CAM classifier with regional semantic aggregation (RCA, CVPR 2022).

    Args:
        backbone: module mapping (B, 3, H, W) -> (B, F, h, w) with an ``out_channels`` attribute (F).
        num_classes: foreground classes C.
        head: ``"per_class"`` (the release's C separate stacks, as grouped convs) or ``"shared"`` (one
            stack with C outputs, the efficient variant).
        head_width: hidden channels of the coarse head and of each class head stack.
        head_depth: conv3x3 + ReLU blocks in each head (0: one conv1x1 classifier, EPS's ``fc8``).
        background_channel: the heads give C + 1 maps, the last one background (EPS).
        coarse_head: build the coarse head on the raw features (RCA's source of region masks); without
            it ``coarse_cams`` is None and regions come from the class heads.
        aggregation: fuse prototype context into the features before the class heads.
        embedding_source: features whose region embeddings fill the memory bank and become prototypes:
            ``"projection"`` (same space as the contrast queries) or ``"backbone"`` (the release's choice).
        projection_dim: channels P of the projection head.
        projection_conv_bias: give the projection's first conv a bias, as the release does (redundant before
            its BatchNorm, see :class:`~rca_lightning.models.ProjectionHead`).
        attention_dim: query/key/value dimension of the aggregation.
        attention: ``"softmax"`` or ``"linear"`` (the release's unnormalised q.k * C/K).
        init: initialisation of the new layers (all but the backbone): ``"default"`` (PyTorch's) or
            ``"normal"`` (the release's: every new Conv2d weight redrawn from N(0, ``init_std``); conv
            biases, the aggregation's Linear key / value layers and BatchNorm keep PyTorch's initialisation,
            as the release leaves them) or ``"xavier"`` (EPS's: new Conv2d weights Xavier-uniform).
        init_std: standard deviation of the ``"normal"`` initialisation (0.01 in the release).
        parameter_grouping: how :meth:`parameter_groups` tells weights from biases: ``"by_shape"``
            (one-dimensional parameters, biases and normalisation scales, are biases) or ``"by_name"`` (the
            release's: a name containing "weight" is a weight, normalisation scales included).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        head: str = "per_class",
        head_width: int = 512,
        head_depth: int = 3,
        background_channel: bool = False,
        coarse_head: bool = True,
        aggregation: bool = True,
        embedding_source: str = "projection",
        projection_dim: int = 256,
        projection_conv_bias: bool = False,
        attention_dim: int = 256,
        attention: str = "softmax",
        init: str = "default",
        init_std: float = 0.01,
        parameter_grouping: str = "by_shape",
    ) -> None:
        super().__init__()
        self.parameter_grouping = check_parameter_grouping(parameter_grouping)
        if init not in INIT_SCHEMES:
            raise InvalidSetting(f"init: expected one of {list(INIT_SCHEMES)}, got '{init}'")
        if not init_std > 0:
            raise InvalidSetting(f"init_std: expected a positive number, got {init_std}")
        if head not in HEAD_TYPES:
            raise InvalidSetting(f"head: expected one of {list(HEAD_TYPES)}, got '{head}'")
        for setting, value in (("num_classes", num_classes), ("head_width", head_width)):
            if value < 1:
                raise InvalidSetting(f"{setting}: expected a positive integer, got {value}")
        if head_depth < 0:
            raise InvalidSetting(f"head_depth: expected a non-negative integer, got {head_depth}")
        if embedding_source not in EMBEDDING_SOURCES:
            raise InvalidSetting(
                f"embedding_source: expected one of {list(EMBEDDING_SOURCES)}, got '{embedding_source}'"
            )
        if not isinstance(getattr(backbone, "out_channels", None), int):
            raise InvalidSetting(
                f"backbone: expected a module with an int `out_channels`, got {type(backbone).__name__}"
            )
        feature_channels = backbone.out_channels
        if embedding_source == "backbone" and projection_dim != feature_channels:
            raise InvalidSetting(
                f"projection_dim: expected {feature_channels} (the backbone's channels) with "
                f"embedding_source='backbone', since contrast queries are compared with stored raw features; "
                f"got {projection_dim}"
            )
        self.num_classes = num_classes
        self.background_channel = background_channel
        num_maps = num_classes + int(background_channel)
        self.embedding_source = embedding_source
        self.projection_dim = projection_dim
        self.backbone = backbone
        self.coarse_head = (
            ConvHead(feature_channels, num_maps, head_width, head_depth) if coarse_head else None
        )
        self.projection = ProjectionHead(feature_channels, projection_dim, conv_bias=projection_conv_bias)
        self.aggregation = (
            SemanticAggregation(feature_channels, self.embedding_dim, attention_dim, attention)
            if aggregation
            else None
        )
        head_type = PerClassHeads if head == "per_class" else ConvHead
        self.class_heads = head_type(feature_channels, num_maps, head_width, head_depth)
        if init != "default":  # the backbone keeps its pretrained (or timm's) weights
            for name, layer in self.named_modules():
                if isinstance(layer, nn.Conv2d) and not name.startswith("backbone."):
                    if init == "normal":
                        nn.init.normal_(layer.weight, mean=0.0, std=init_std)
                    else:
                        nn.init.xavier_uniform_(layer.weight)

    @property
    def embedding_dim(self) -> int:
        """Dimension of the region embeddings stored in the memory bank (and of the prototypes)."""
        return self.projection_dim if self.embedding_source == "projection" else self.backbone.out_channels

    def forward(
        self,
        images: torch.Tensor,
        prototypes: torch.Tensor | None = None,
        prototype_valid: torch.Tensor | None = None,
    ) -> RCAOutput:
        """Run the network.

        Args:
            images: (B, 3, H, W) normalised images.
            prototypes: (C, K, embedding_dim) class prototypes for the aggregation, or None (zero context).
                Ignored when the model was built with ``aggregation=False``.
            prototype_valid: (C, K) bool, which prototypes exist; None means all.

        Returns:
            RCAOutput with maps at the backbone's resolution (H/os, W/os).
        """
        features = self.backbone(images)  # (B, F, h, w)
        projected = self.projection(features)  # (B, P, h, w)
        coarse_cams = self.coarse_head(features) if self.coarse_head is not None else None  # (B, C', h, w)
        if self.aggregation is not None:
            head_input = self.aggregation(features, prototypes, prototype_valid)  # (B, F, h, w)
        else:
            head_input = features
        cams = self.class_heads(head_input)  # (B, C', h, w)
        foreground = slice(0, self.num_classes)
        return RCAOutput(
            features=features,
            projected=projected,
            coarse_cams=coarse_cams,
            cams=cams,
            coarse_logits=None if coarse_cams is None else coarse_cams[:, foreground].mean(dim=(2, 3)),
            logits=cams[:, foreground].mean(dim=(2, 3)),
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Split the parameters for the release's 1x/2x/10x/20x learning rates.

        Every parameter appears in exactly one list. "backbone" is ``self.backbone``; "aggregation" is
        ``self.aggregation`` (query, key, value, context and fuse layers: not ``extra*`` in the release, so
        they train like the backbone there); "new" is every other layer (coarse head, class heads and
        projection: the release's ``extra*`` layers). Which of a part's parameters are biases follows
        ``parameter_grouping``: ``"by_shape"`` sends the one-dimensional ones (conv/linear biases and the
        weight and bias of normalisation layers) to the ``*_bias`` lists, ``"by_name"`` every one whose name
        lacks "weight" (a BatchNorm weight then trains at the weights' rate, as in the release). The
        ``*_bias`` lists get the 2x learning rate and, by convention, no weight decay
        (``RCALitModule(bias_weight_decay=True)`` decays them, as the release does); everything else goes to
        ``*_weight``.

        Returns:
            dict with keys ``backbone_weight``, ``backbone_bias``, ``aggregation_weight`` and
            ``aggregation_bias`` (only with aggregation), ``new_weight``, ``new_bias``.
        """
        parts = {"aggregation": self.aggregation} if self.aggregation is not None else {}
        return split_parameter_groups(self, self.backbone, parts, self.parameter_grouping)

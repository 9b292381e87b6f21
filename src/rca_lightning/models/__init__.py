"""Network pieces of RCA: timm backbone, class heads, projection, semantic aggregation and the full net."""

from rca_lightning.models.aggregation import SemanticAggregation
from rca_lightning.models.backbone import TimmBackbone
from rca_lightning.models.heads import ConvHead, PerClassHeads
from rca_lightning.models.projection import ProjectionHead
from rca_lightning.models.rca_net import RCANet, RCAOutput

__all__ = [
    "ConvHead",
    "PerClassHeads",
    "ProjectionHead",
    "RCANet",
    "RCAOutput",
    "SemanticAggregation",
    "TimmBackbone",
]

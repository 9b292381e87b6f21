"""Networks: RCA's pieces (timm backbone, class heads, projection, semantic aggregation, the full net) and the
segmentation networks (DeepLab-v2, DeepLab-v3+ on a multi-level timm backbone)."""

from rca_lightning.models.aggregation import SemanticAggregation
from rca_lightning.models.backbone import TimmBackbone
from rca_lightning.models.boundary_net import BoundaryNet
from rca_lightning.models.deeplab_v2 import DeepLabV2
from rca_lightning.models.deeplab_v3plus import DeepLabV3Plus
from rca_lightning.models.heads import ConvHead, PerClassHeads
from rca_lightning.models.multi_level_backbone import TimmMultiLevelBackbone
from rca_lightning.models.projection import ProjectionHead
from rca_lightning.models.rca_net import RCANet, RCAOutput

__all__ = [
    "BoundaryNet",
    "ConvHead",
    "DeepLabV2",
    "DeepLabV3Plus",
    "PerClassHeads",
    "ProjectionHead",
    "RCANet",
    "RCAOutput",
    "SemanticAggregation",
    "TimmBackbone",
    "TimmMultiLevelBackbone",
]

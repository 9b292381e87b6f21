"""LightningModules that wire models, losses, optimisers and metrics: the ``WSSSMethod`` seam, RCA, EPS,
the segmentation network and IRN's boundary network. Imports the packages below it, never inference."""

from rca_lightning.lit.boundary_module import BoundaryLitModule
from rca_lightning.lit.eps_module import EPSLitModule
from rca_lightning.lit.rca_module import RCALitModule
from rca_lightning.lit.seg_module import SegLitModule
from rca_lightning.lit.wsss_method import WSSSMethod

__all__ = ["BoundaryLitModule", "EPSLitModule", "RCALitModule", "SegLitModule", "WSSSMethod"]

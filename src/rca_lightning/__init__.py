"""rca-lightning: weakly supervised semantic segmentation with Regional Semantic Contrast and Aggregation."""

from importlib.metadata import version

from rca_lightning.callbacks import MemoryBankCallback
from rca_lightning.data import SyntheticVOCGenerator, VOCDataModule, VOCSegmentationDataset
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.lit import EPSLitModule, RCALitModule, WSSSMethod
from rca_lightning.memory import RegionalMemoryBank
from rca_lightning.models import RCANet, TimmBackbone

__version__ = version("rca-lightning")  # the one version, pyproject.toml's

__all__ = [
    "EPSLitModule",
    "MemoryBankCallback",
    "RCALitModule",
    "RCANet",
    "RegionalMemoryBank",
    "Segmenter",
    "SyntheticVOCGenerator",
    "TimmBackbone",
    "VOCDataModule",
    "VOCSegmentationDataset",
    "WSSSMethod",
]

"""rca-lightning: weakly supervised semantic segmentation with Regional Semantic Contrast and Aggregation."""

from importlib.metadata import version

from rca_lightning.utils.lazy_exports import lazy_exports

__version__ = version("rca-lightning")  # the one version, pyproject.toml's

# Each public name -> the package that defines it, imported on first use (``from rca_lightning import
# RCALitModule``): a process that needs one part of the library (a console script's error handling) does not
# import the rest.
_HOMES = {
    "EPSLitModule": "rca_lightning.lit",
    "MemoryBankCallback": "rca_lightning.callbacks",
    "RCALitModule": "rca_lightning.lit",
    "RCANet": "rca_lightning.models",
    "RegionalMemoryBank": "rca_lightning.memory",
    "Segmenter": "rca_lightning.inference.segmenter",
    "SyntheticVOCGenerator": "rca_lightning.data",
    "TimmBackbone": "rca_lightning.models",
    "VOCDataModule": "rca_lightning.data",
    "VOCSegmentationDataset": "rca_lightning.data",
    "WSSSMethod": "rca_lightning.lit",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

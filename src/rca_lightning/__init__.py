"""rca-lightning: weakly supervised semantic segmentation with Regional Semantic Contrast and Aggregation.

The names below are imported on first use (``from rca_lightning import RCALitModule``): a process that needs
one part of the library (a pool worker writing pseudo masks, a console script's ``--help``) does not import
the rest.
"""

from importlib import import_module
from importlib.metadata import version

__version__ = version("rca-lightning")  # the one version, pyproject.toml's

# Each public name -> the package that defines it.
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


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'rca_lightning' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])

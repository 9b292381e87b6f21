from rca_lightning.lit.rca_module import RCALitModule

__all__ = ["RCALitModule"]

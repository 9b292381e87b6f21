"""The pipeline's report: headline figures of every stage, the printed table, the figure grid."""

from rca_lightning.report.figure_grid import cam_overlay, colourise_mask, figure_grid
from rca_lightning.report.pipeline_report import build_report, format_report

__all__ = ["build_report", "cam_overlay", "colourise_mask", "figure_grid", "format_report"]

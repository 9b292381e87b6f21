"""The pipeline's report: headline figures of every stage, the printed table, the figure grid."""

from rca_lightning.report.figure_grid import figure_grid, legend_strip
from rca_lightning.report.figure_selection import pick_figure_images
from rca_lightning.report.pipeline_report import build_report, format_report, weak_classes

__all__ = [
    "build_report",
    "figure_grid",
    "format_report",
    "legend_strip",
    "pick_figure_images",
    "weak_classes",
]

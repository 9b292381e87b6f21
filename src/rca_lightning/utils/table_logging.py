"""Log a table (the report's per-class IoU) to whichever Lightning loggers a run has.

``WandbLogger`` gets a ``wandb.Table`` (``log_table``), ``TensorBoardLogger`` the table as Markdown text
(``add_text``) and ``CSVLogger``, which has no table support, ``<log_dir>/tables/<key>.csv``. Other loggers
are skipped with a warning. Rank zero only, like :func:`~rca_lightning.utils.image_logging.log_images`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

TABLES_FOLDER = "tables"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``columns`` and ``rows`` as a Markdown table (an empty cell for None)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |")
    return "\n".join(lines)


@rank_zero_only
def log_table(
    loggers: Logger | Iterable[Logger] | None,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
) -> None:
    """Log one table under ``key`` (e.g. ``"report/per_class_iou"``) to every logger that can hold it."""
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"log_table: key={key!r}; expected a non-empty relative name like 'report/iou'")
    if any(len(row) != len(columns) for row in rows):
        raise ValueError(f"log_table: every row of {key!r} needs {len(columns)} cells, one per column")
    if loggers is None:
        return
    for logger in [loggers] if isinstance(loggers, Logger) else loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=list(columns), data=[list(row) for row in rows])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, markdown_table(columns, rows))
        elif isinstance(logger, CSVLogger):
            path = Path(logger.log_dir) / TABLES_FOLDER / f"{key}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(columns)
                writer.writerows(rows)
        else:
            rank_zero_warn(f"log_table: {type(logger).__name__} cannot hold tables; skipped {key!r}")


__all__ = ["log_table", "markdown_table"]

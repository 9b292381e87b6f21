"""Known third-party noise, hidden at the console scripts' entry points (nothing of the project's own)."""

from __future__ import annotations

import logging
import warnings

# Message patterns: deprecations inside dependencies, nothing a user can act on.
KNOWN_WARNINGS = (
    # torchdata 0.11's StatefulDataLoader calls a torch function that torch 2.13 deprecates.
    r"'set_vital' is deprecated",
    # Lightning 2.6's pytree helper uses a torch API that newer torch deprecates.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
# Lightning's advertisement of its hosted logger, printed at every fit.
KNOWN_LOG_LINES = ("litlogger",)
# Loggers that report their passes at INFO (torch's ONNX exporter's graph passes), shown from WARNING on.
CHATTY_LOGGERS = ("onnx_ir", "onnxscript")


class _DropKnownLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in KNOWN_LOG_LINES)


def silence_known_noise() -> None:
    """Hide :data:`KNOWN_WARNINGS`, :data:`KNOWN_LOG_LINES` and the INFO lines of :data:`CHATTY_LOGGERS` for
    the rest of the process. Idempotent."""
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownLines) for f in logger.filters):
            logger.addFilter(_DropKnownLines())
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


__all__ = ["silence_known_noise"]

"""The one door to a trained model: run folders -> eval-mode networks (``trained_runs``), ``Segmenter``,
``rca-predict`` over files (``prediction``) and ``rca-export`` to ONNX / TorchScript (``export``)."""

from rca_lightning.inference.export import exported_bytes, max_abs_difference, run_exported
from rca_lightning.inference.prediction import PredictionSummary, list_inputs, predict_files
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.inference.trained_runs import (
    TrainedRun,
    TrainingRun,
    load_classifier,
    load_segmentation_network,
    load_trained_run,
    resolve_training_run,
)

__all__ = [
    "PredictionSummary",
    "Segmenter",
    "TrainedRun",
    "TrainingRun",
    "exported_bytes",
    "list_inputs",
    "load_classifier",
    "load_segmentation_network",
    "load_trained_run",
    "max_abs_difference",
    "predict_files",
    "resolve_training_run",
    "run_exported",
]

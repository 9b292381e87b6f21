"""The pipeline from image tags to a segmentation network: its stages declared (inputs, config, what they read
from earlier stages), the plan checked before anything runs, the runner, its clock and the report."""

from rca_lightning.pipeline.runner import Pipeline, run_pipeline
from rca_lightning.pipeline.stages import STAGE_NAMES, STAGES

__all__ = ["STAGES", "STAGE_NAMES", "Pipeline", "run_pipeline"]

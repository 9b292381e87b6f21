"""``rca-pipeline``: from images with tags to a trained segmentation network and a report, stage by stage.

The job: :func:`rca_lightning.pipeline.runner.pipeline_job` (:mod:`rca_lightning.pipeline`).
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.pipeline.runner import pipeline_job

main = hydra_console_script("rca-pipeline", "pipeline", pipeline_job)

if __name__ == "__main__":
    main()

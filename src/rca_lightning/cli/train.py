"""``rca-train``: train the RCA CAM classifier from the packaged Hydra configs.

The task: :func:`rca_lightning.tasks.train.train`.
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.tasks.train import train

main = hydra_console_script("rca-train", "train", train)

if __name__ == "__main__":
    main()

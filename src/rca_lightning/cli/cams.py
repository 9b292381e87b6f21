"""``rca-cams``: multi-scale + flip CAMs of a trained classifier for one split, one ``.npz`` per image.

The task: :func:`rca_lightning.tasks.cams.cams`.
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.tasks.cams import cams

main = hydra_console_script("rca-cams", "cams", cams)

if __name__ == "__main__":
    main()

"""``rca-seg``: train a segmentation network on pseudo masks and score it on ground truth.

The task: :func:`rca_lightning.tasks.seg.segment`.
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.tasks.seg import segment

main = hydra_console_script("rca-seg", "seg_train", segment)

if __name__ == "__main__":
    main()

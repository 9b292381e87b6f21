"""``python -m tests.coco_mask_build ROOT SPLIT CACHE``: the COCO mask cache built by every process of a
launch (torchrun), as the console scripts build it before a trainer starts."""

import sys

from rca_lightning.data.coco_masks import build_coco_masks
from rca_lightning.utils.ranks import stage_ranks

if __name__ == "__main__":
    root, split, cache = sys.argv[1:4]
    with stage_ranks() as ranks:
        assert ranks.world_size == 2, ranks
        build_coco_masks(root, split, cache_dir=cache, num_workers=0, ranks=ranks)

"""``rca-boundary``: train IRN's boundary network on relation labels, then write the boundary maps of a split
for the random walk (``rca-pseudo refine=random_walk refine.boundary_dir=...``).

The task: :func:`rca_lightning.tasks.boundary.boundary`.
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.tasks.boundary import boundary

main = hydra_console_script("rca-boundary", "boundary", boundary)

if __name__ == "__main__":
    main()

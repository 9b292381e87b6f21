"""``rca-pseudo``: pseudo masks (palette PNGs, 255 = ignore) from seeds: the CAM files of ``rca-cams``,
the attention accumulated during training, or their max.

The task: :func:`rca_lightning.tasks.pseudo.pseudo`.
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.tasks.pseudo import pseudo

main = hydra_console_script("rca-pseudo", "pseudo", pseudo)

if __name__ == "__main__":
    main()

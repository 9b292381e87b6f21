"""``rca-export``: a run's segmentation network as an ONNX or TorchScript file (conf/export.yaml).

The task: :func:`rca_lightning.tasks.export.export`.
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.tasks.export import export

main = hydra_console_script("rca-export", "export", export)

if __name__ == "__main__":
    main()

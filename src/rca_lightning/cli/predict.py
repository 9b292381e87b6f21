"""``rca-predict``: masks of a user's own images from a trained run (conf/predict.yaml has examples).

The task: :func:`rca_lightning.tasks.predict.predict`.
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.tasks.predict import predict

main = hydra_console_script("rca-predict", "predict", predict)

if __name__ == "__main__":
    main()

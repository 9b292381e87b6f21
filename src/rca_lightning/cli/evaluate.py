"""``rca-eval``: score seeds (background-threshold sweep) and / or pseudo masks against ground truth.

The task: :func:`rca_lightning.tasks.evaluate.evaluate`.
"""

from rca_lightning.cli.entry import hydra_console_script
from rca_lightning.tasks.evaluate import evaluate

main = hydra_console_script("rca-eval", "eval", evaluate)

if __name__ == "__main__":
    main()

"""``python -m tests.rank_stuck_probe TIMEOUT``: a stage whose rank 1 never reaches the barrier (it sleeps),
ended the way the console scripts end (``rank-probe: error: <line>``, exit status 2)."""

import sys
import time

from rca_lightning.cli.console import run_console_script
from rca_lightning.utils.ranks import stage_ranks

STUCK_SECONDS = 120


def stage() -> None:
    with stage_ranks("rank-probe", float(sys.argv[1])) as ranks:
        if ranks.rank == 1:
            time.sleep(STUCK_SECONDS)


if __name__ == "__main__":
    run_console_script(stage, "rank-probe")

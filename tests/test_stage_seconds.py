"""``rca-pipeline``'s stage seconds count every attempt, including one killed before it recorded them."""

import json
import os

from omegaconf import OmegaConf

from rca_lightning.pipeline.clock import STATE_FILE, StageClock
from rca_lightning.pipeline.plan import PlannedStage
from rca_lightning.pipeline.stage import Stage, StageArguments
from rca_lightning.utils.ranks import Ranks
from tests.test_pipeline import make_pipeline

KILLED_ATTEMPT_SECONDS = 5.0


class KilledMidStage(BaseException):
    """Stands for a kill: nothing after the stage's run executes."""


def test_a_killed_attempt_is_counted_up_to_its_last_write(tmp_path):
    def killed_attempt(cfg) -> None:
        state = json.loads((tmp_path / STATE_FILE).read_text())  # on disk before the stage runs
        started = state["stages"]["cams"]["attempt_started"]
        partial = tmp_path / "cams" / "maps" / "image_1.npz"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(b"written")
        os.utime(partial, (started + KILLED_ATTEMPT_SECONDS, started + KILLED_ATTEMPT_SECONDS))
        raise KilledMidStage

    def finishing_attempt(cfg) -> None:
        (tmp_path / "cams" / "cams.json").write_text("{}")

    for attempt in (killed_attempt, finishing_attempt):
        pipeline = make_pipeline(tmp_path, [])
        stage = Stage(
            "cams", "cams", "cams.json", attempt, lambda settings: (), lambda settings: StageArguments()
        )
        planned = PlannedStage(stage, tmp_path / "cams", [], OmegaConf.create(), ())
        try:  # a new process each time: the clock's state as the file has it
            pipeline.run_stage(planned, StageClock(tmp_path), Ranks())
        except KilledMidStage:
            pass

    [entry] = json.loads((tmp_path / STATE_FILE).read_text())["stages"].values()
    assert set(entry) == {"seconds"}
    assert KILLED_ATTEMPT_SECONDS <= entry["seconds"] < KILLED_ATTEMPT_SECONDS + 5
    StageClock(tmp_path).settle("cams", tmp_path / "cams")  # done: what a rerun does; the seconds stay
    assert json.loads((tmp_path / STATE_FILE).read_text())["stages"]["cams"] == entry

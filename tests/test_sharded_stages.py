"""The CPU-bound stages under torchrun: each process takes its share of the images and the results equal
those of one process (masks byte for byte, summaries and scores)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rca_lightning.data.coco_masks import build_coco_masks
from rca_lightning.utils.ranks import Ranks, launch_environment, stage_ranks
from tests.console_runs import run_in_process, script_entry
from tests.pipeline_runs import pipeline_command, pipeline_environment
from tests.stage_helpers import make_dataset_with_cams
from tests.test_coco import TinyCOCO

# Timings and the process count differ between launches by nature; everything else must not.
TIMING_KEYS = {"seconds", "images_per_second", "processes"}


def test_shares_are_disjoint_and_cover_the_items():
    items = list(range(11))
    shares = [Ranks(rank, 3).shard(items) for rank in range(3)]
    assert sorted(sum(shares, [])) == items
    assert [len(share) for share in shares] == [4, 4, 3]
    assert Ranks().shard(items) == items and Ranks().sum([2, 3]) == [2, 3]


def test_a_plain_process_is_one_rank(monkeypatch):
    for variable in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        "TORCHELASTIC_RUN_ID",
    ):
        monkeypatch.delenv(variable, raising=False)
    assert launch_environment() is None
    with stage_ranks() as ranks:
        assert (ranks.rank, ranks.world_size, ranks.is_main) == (0, 1, True)


def launch(
    module: str, arguments: list[str], processes: int = 2
) -> tuple[subprocess.CompletedProcess, float]:
    """``module`` under torchrun in ``processes``; returns the finished launch and its seconds."""
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
    ]
    environment = {**pipeline_environment(), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    result = subprocess.run(
        [*torchrun, "-m", module, *arguments], capture_output=True, text=True, env=environment, timeout=600
    )
    return result, time.monotonic() - start


def run_stage(module: str, arguments: list[str], processes: int) -> None:
    """``module`` under torchrun in ``processes``, which must succeed."""
    result, _ = launch(module, arguments, processes)
    assert result.returncode == 0, result.stderr[-3000:]


def rank_tracebacks(output: str) -> list[str]:
    """Traceback lines from the ranks' code (torchrun's own report of a failed launch is one of its own)."""
    return [
        line for line in output.splitlines() if line.strip().startswith("File ") and "rca_lightning" in line
    ]


@pytest.mark.slow
def test_a_check_failing_on_one_rank_stops_every_rank_in_the_same_line(tmp_path):
    # Rank 0 finds its CAM folder, rank 1 (as on another machine) does not.
    make_dataset_with_cams(tmp_path / "voc", tmp_path / "cams0", num_images=2)
    run_dir = tmp_path / "run"
    cams_dir = f"cams_dir={tmp_path}/cams${{oc.env:RANK}}"
    result, _ = launch("rca_lightning.cli.pseudo", [cams_dir, "progress=false", f"hydra.run.dir={run_dir}"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("rca-pseudo: error:")]
    assert len(errors) == 2 and errors[0] == errors[1], result.stderr[-3000:]
    assert (
        errors[0].startswith(f"rca-pseudo: error: cams_dir={tmp_path}/cams1") and "(rank 1 of 2)" in errors[0]
    )
    assert "exitcode  : 2" in result.stderr and result.returncode != 0
    assert "gloo" not in result.stderr.lower() and rank_tracebacks(result.stderr) == []
    assert not (run_dir / "pseudo_masks" / "settings.json").exists()  # nothing claimed, nothing written


@pytest.mark.slow
def test_a_rank_that_never_arrives_is_named_after_the_barrier_timeout(tmp_path):
    result, seconds = launch("tests.rank_stuck_probe", ["3"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("rank-probe: error:")]
    assert errors == [
        "rank-probe: error: rank-probe: ranks [1] of 2 did not reach the barrier within barrier_timeout_s=3"
    ], result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr and rank_tracebacks(result.stderr) == []
    assert seconds < 100  # the stuck rank sleeps 120 s: the launch ended at the timeout


def stage_commands(common: list[str], run: Path) -> list[tuple[str, list[str]]]:
    """The pseudo-mask stage into ``run`` and the scoring of its masks, as (script, arguments)."""
    pseudo = [*common, "num_workers=1", f"hydra.run.dir={run}"]
    scores = [*common, f"masks_dir={run / 'pseudo_masks'}", f"hydra.run.dir={run / 'eval'}"]
    return [("rca-pseudo", pseudo), ("rca-eval", scores)]


def without_timings(summary: dict) -> dict:
    return {key: value for key, value in summary.items() if key not in TIMING_KEYS}


@pytest.mark.slow
def test_two_processes_write_the_masks_and_scores_of_one(tmp_path):
    cams_dir = tmp_path / "cams"
    cams_dir.mkdir()
    dataset = make_dataset_with_cams(tmp_path / "voc", cams_dir, num_images=7)
    common = ["progress=false", f"cams_dir={cams_dir}"]
    one, two = tmp_path / "p1", tmp_path / "p2"
    # One process: the console scripts in this one (tests/console_runs.py); two: under torchrun.
    for script, arguments in stage_commands(common, one):
        assert run_in_process(script, *arguments).returncode == 0
    for script, arguments in stage_commands(common, two):
        run_stage(script_entry(script).module, arguments, processes=2)
    for image_id in dataset.image_ids:
        name = f"pseudo_masks/{image_id}.png"
        assert (one / name).read_bytes() == (two / name).read_bytes()
    pseudo_one, pseudo_two = (json.loads((run / "pseudo.json").read_text()) for run in (one, two))
    assert (pseudo_one["processes"], pseudo_two["processes"]) == (1, 2)
    assert without_timings(pseudo_one) | {"masks_dir": None} == without_timings(pseudo_two) | {
        "masks_dir": None
    }
    assert pseudo_two["total"] == pseudo_two["written"] == 7
    scores_one, scores_two = (json.loads((run / "eval" / "eval.json").read_text()) for run in (one, two))
    for report in (scores_one, scores_two):
        report["pseudo_masks"].pop("masks_dir")
    assert scores_one == scores_two
    assert scores_two["cams"]["num_images"] == scores_two["pseudo_masks"]["num_images"] == 7
    # Resumed under two processes: nothing to write, the same summary.
    run_stage(script_entry("rca-pseudo").module, stage_commands(common, two)[0][1], processes=2)
    again = json.loads((two / "pseudo.json").read_text())
    assert (again["written"], again["skipped"]) == (0, 7)


@pytest.mark.slow
def test_two_processes_render_the_coco_masks_of_one(tmp_path):
    coco = TinyCOCO(tmp_path / "coco")
    one = build_coco_masks(coco.root, "train2014", cache_dir=tmp_path / "one", num_workers=0)
    # tests/coco_mask_build.py: build_coco_masks under stage_ranks, as the console scripts call it.
    arguments = [str(coco.root), "train2014", str(tmp_path / "two")]
    run_stage("tests.coco_mask_build", arguments, processes=2)
    two = tmp_path / "two" / "train2014"
    assert sorted(path.name for path in one.iterdir()) == sorted(path.name for path in two.iterdir())
    for path in one.iterdir():
        assert path.read_bytes() == (two / path.name).read_bytes(), path.name


@pytest.mark.slow
def test_rca_pipeline_under_torchrun_trains_on_both_processes_and_shares_the_cpu_stages(tmp_path):
    run_dir = tmp_path / "run"
    cache = tmp_path / "cache"
    command = pipeline_command(run_dir, cache, "trainer=ddp_cpu", epochs=2, segmentation_epochs=1)
    command = [part for part in command[1:] if part != "trainer=cpu"]
    small = ["data.generator.num_train=16", "data.generator.num_val=8", "data.generator.image_size=32"]
    run_stage("rca_lightning.cli.pipeline", [*command, *small], processes=2)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["stages"][-1] == "segmentation" and report["seg_miou"] is not None
    # DDP over the two processes: 16 images in batches of 8 make one step per rank and epoch.
    steps = (run_dir / "classifier" / "csv" / "metrics.csv").read_text().splitlines()
    header = steps[0].split(",")
    last_step = max(int(row.split(",")[header.index("step")]) for row in steps[1:])
    assert last_step == 1
    for stage in ("pseudo_masks/pseudo.json", "pseudo_mask_eval/eval.json"):
        assert (run_dir / stage).is_file()
    assert json.loads((run_dir / "pseudo_masks" / "pseudo.json").read_text())["processes"] == 2

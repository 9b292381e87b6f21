"""Damaged or foreign state, out-of-range settings and a killed worker end a stage in one line (exit status 2)
and write nothing: the cases of issue 24 ("Why", last bullets), with the installed console scripts where a run
is cheap and the reader itself otherwise. The scripts run in this process (``tests/console_runs.py``), except
the one whose pool worker is killed: that run is a process of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rca_lightning.data.coco import read_coco_instances
from rca_lightning.imaging.palette_png import mask_file_is_complete
from rca_lightning.pipeline.clock import STATE_FILE, StageClock
from rca_lightning.pseudo.boundary_maps import boundary_image_scale
from rca_lightning.pseudo.refiners import CRFRefiner
from rca_lightning.tasks.evaluate import threshold_sweep
from rca_lightning.tasks.stage_settings import claim_output_folder, read_settings
from rca_lightning.utils.errors import InvalidData, InvalidSetting
from rca_lightning.utils.state_files import read_json_object
from tests.console_runs import OFFLINE, ScriptResult, run_in_process
from tests.stage_helpers import make_dataset_with_cams
from tests.test_coco import TinyCOCO
from tests.test_data_validation_cli import assert_stopped_before_training, rca_train

SECONDS_TO_FAIL = 60
REPOSITORY = Path(__file__).resolve().parents[1]
# The image whose worker kills itself (DyingRefiner), named by this variable of the environment.
KILL_ON_IMAGE = "RCA_TEST_KILL_ON_IMAGE"


@dataclass(frozen=True)
class DyingRefiner(CRFRefiner):
    """The CRF rule, except that a worker given the image named by ``$RCA_TEST_KILL_ON_IMAGE`` kills itself
    with SIGKILL, as the kernel's out-of-memory killer would."""

    def __call__(self, image, seeds, classes, image_id):
        if os.environ.get(KILL_ON_IMAGE) == image_id:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(image, seeds, classes, image_id)


def run_script(
    script: str, run_dir: Path, *overrides: str, env: dict | None = None
) -> tuple[ScriptResult, float]:
    """An installed console script, run in this process with its run folder at ``run_dir``; returns what it
    printed and its seconds."""
    started = time.perf_counter()
    result = run_in_process(script, *overrides, f"hydra.run.dir={run_dir}", environment=env)
    return result, time.perf_counter() - started


def run_process(
    script: str, run_dir: Path, *overrides: str, env: dict | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """:func:`run_script` as a process of its own (a pool worker of it may kill itself); the same returns."""
    environment = {**os.environ, **OFFLINE}
    environment.pop("HYDRA_FULL_ERROR", None)
    command = [str(Path(sys.executable).with_name(script)), *overrides, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, env={**environment, **(env or {})}, timeout=180
    )
    return result, time.perf_counter() - started


def the_one_line(script: str, result: ScriptResult | subprocess.CompletedProcess, seconds: float) -> str:
    """The error line of a script that stopped on a user error (exit 2, one line, no traceback), quickly."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), result.stderr[-3000:]
    assert seconds < SECONDS_TO_FAIL
    return lines[0].removeprefix(f"{script}: error: ")


@pytest.fixture(scope="module")
def cams_dir(tmp_path_factory) -> Path:
    """12 images with CAM files and the settings.json of rca-cams (read only: tests copy what they edit)."""
    base = tmp_path_factory.mktemp("damaged_state")
    (base / "cams").mkdir()
    make_dataset_with_cams(base / "voc", base / "cams")
    return base / "cams"


# ------------------------------------------------------------------------------------ settings out of range
@pytest.mark.slow
def test_rca_eval_refuses_a_nan_threshold(cams_dir, tmp_path):
    result, seconds = run_script(
        "rca-eval", tmp_path / "run", f"cams_dir={cams_dir}", "thresholds=[0,0.6,nan]", "progress=false"
    )
    line = the_one_line("rca-eval", result, seconds)
    assert line == "thresholds: expected finite numbers (no nan or inf), got [0, 0.6, nan]"
    assert not (tmp_path / "run" / "eval.json").exists()


@pytest.mark.parametrize(
    "thresholds",
    [
        [0.0, 0.6, float("nan")],
        [0.0, 0.6, float("inf")],
        [0.0, 2.0, 0.1],
        [-0.1, 0.6, 0.1],
        [0.6, 0.0, 0.1],
        [0.0, 0.6, 0.0],
        [0.0, 1.0, 1e-6],  # a million confusion matrices
        [0.0, 0.6],
        [True, 0.6, 0.1],
    ],
)
def test_a_threshold_sweep_out_of_range_is_named(thresholds):
    with pytest.raises(
        InvalidSetting, match=r"^thresholds: expected \[start, stop, step\], numbers in \[0, 1\]"
    ):
        threshold_sweep(OmegaConf.create({"thresholds": thresholds}).thresholds)


def test_a_sweep_in_range_gives_its_thresholds():
    sweep = threshold_sweep(OmegaConf.create({"thresholds": [0.0, 1.0, 0.001]}).thresholds)
    assert len(sweep) == 1001 and sweep[0] == 0.0 and abs(float(sweep[-1]) - 1.0) < 1e-6


@pytest.mark.slow
def test_rca_pseudo_refuses_a_negative_exp_times(cams_dir, tmp_path):
    boundary_dir = tmp_path / "boundary"
    boundary_dir.mkdir()
    result, seconds = run_script(
        "rca-pseudo",
        tmp_path / "run",
        f"cams_dir={cams_dir}",
        "refine=random_walk",
        f"refine.boundary_dir={boundary_dir}",
        "refine.exp_times=-1",
        "progress=false",
    )
    assert (
        the_one_line("rca-pseudo", result, seconds)
        == "refine.exp_times: expected an integer in [0, 16], got -1"
    )
    assert not any(path.suffix in {".json", ".png"} for path in (tmp_path / "run").rglob("*"))


# ---------------------------------------------------------------------------------- damaged state files
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "holds an array, expected the settings rca-cams wrote (a JSON object)"),
        ('"cams"', "holds a string, expected"),
        ("null", "holds null, expected"),
        ("{", "not readable as JSON (Expecting property name enclosed in double quotes"),
        ('{"split": NaN}', "not readable as JSON (NaN is not a finite number)"),
        ('{"split": -Infinity}', "not readable as JSON (-Infinity is not a finite number)"),
        ("{}", "expected the settings rca-cams wrote, with a split name and a dataset {root, class_names}"),
        ('{"split": "train", "dataset": {"root": 3}}', "got split='train', dataset={'root': 3}"),
    ],
)
def test_a_damaged_settings_file_is_named(tmp_path, text, problem):
    (tmp_path / "settings.json").write_text(text)
    with pytest.raises(InvalidData) as caught:
        read_settings(tmp_path, "rca-cams", "cams_dir")
    assert str(caught.value).startswith(f"{tmp_path / 'settings.json'}: ") and problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(InvalidData, match=rf"^{re.escape(str(path))}: not readable as JSON \("):
        read_json_object(path, "a state")


@pytest.mark.parametrize("script", ["rca-eval", "rca-pseudo"])
@pytest.mark.slow
def test_a_settings_file_holding_a_list_stops_the_stage_in_one_line(cams_dir, tmp_path, script):
    folder = tmp_path / "cams"
    folder.mkdir()
    for file in cams_dir.iterdir():  # the CAM files, and a settings.json holding [1, 2]
        (folder / file.name).write_bytes(b"[1,2]" if file.name == "settings.json" else file.read_bytes())
    result, seconds = run_script(script, tmp_path / "run", f"cams_dir={folder}", "progress=false")
    assert the_one_line(script, result, seconds) == (
        f"{folder / 'settings.json'}: holds an array, expected the settings rca-cams wrote (a JSON object)"
    )
    assert not any(path.suffix in {".json", ".png"} for path in (tmp_path / "run").rglob("*"))


@pytest.mark.slow
def test_rca_eval_names_a_masks_folder_whose_settings_are_a_list(tmp_path):
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    (masks_dir / "settings.json").write_text("[1,2]")
    result, seconds = run_script("rca-eval", tmp_path / "run", f"masks_dir={masks_dir}", "progress=false")
    assert the_one_line("rca-eval", result, seconds).startswith(
        f"{masks_dir / 'settings.json'}: holds an array"
    )


def test_a_resumed_folder_whose_settings_are_damaged_is_named_and_kept(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("[1,2]")
    with pytest.raises(InvalidData, match="holds an array, expected the settings of the run that started"):
        claim_output_folder(tmp_path, {"stage": "rca-pseudo"})
    assert path.read_text() == "[1,2]"


@pytest.mark.slow
def test_rca_pipeline_names_a_damaged_pipeline_state(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / STATE_FILE).write_text("{")
    result, seconds = run_script("rca-pipeline", run_dir, f"paths.cache_dir={tmp_path / 'cache'}")
    assert the_one_line("rca-pipeline", result, seconds).startswith(
        f"{run_dir / STATE_FILE}: not readable as JSON (Expecting property name"
    )
    assert not {"classifier", "cams", "report.json"} & {path.name for path in run_dir.iterdir()}
    assert (run_dir / STATE_FILE).read_text() == "{"


@pytest.mark.parametrize(
    "state",
    [
        "[]",
        '{"stages": []}',
        '{"stages": {"cams": 3}}',
        '{"stages": {"cams": {"seconds": "soon"}}}',
        '{"stages": {"cams": {"seconds": -1}}}',
        '{"stages": {"cams": {"seconds": 1, "attempt_started": true}}}',
        '{"stages": {"cams": {"seconds": 1e999}}}',
        '{"stages": {"cams": {"seconds": NaN}}}',
    ],
)
def test_a_foreign_pipeline_state_is_named(tmp_path, state):
    (tmp_path / STATE_FILE).write_text(state)
    with pytest.raises(InvalidData, match=rf"^{re.escape(str(tmp_path / STATE_FILE))}: .*expected"):
        StageClock(tmp_path)


def test_a_pipeline_state_of_finished_and_interrupted_stages_is_read(tmp_path):
    state = {"stages": {"classifier": {"seconds": 12.5}, "cams": {"seconds": 0, "attempt_started": 1.0e9}}}
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    assert StageClock(tmp_path).seconds == {"classifier": 12.5, "cams": 0}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '{"stage": "rca-boundary", "image_scale": Infinity}',
            "not readable as JSON (Infinity is not a finite",
        ),
        ('{"stage": "rca-boundary", "image_scale": -1}', "image_scale: expected a finite number in (0, 4]"),
        ('{"stage": "rca-boundary", "image_scale": "2"}', "image_scale: expected a finite number in (0, 4]"),
        ('{"stage": "rca-boundary", "image_scale": 1e6}', "got 1000000.0"),
        ("[2.0]", "holds an array, expected the settings rca-boundary wrote"),
    ],
)
def test_a_boundary_folder_with_a_damaged_image_scale_is_named(tmp_path, text, problem):
    (tmp_path / "settings.json").write_text(text)
    with pytest.raises(InvalidData) as caught:
        boundary_image_scale(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'settings.json'}: ") and problem in str(caught.value)


@pytest.mark.slow
def test_rca_pseudo_names_a_boundary_folder_whose_image_scale_is_infinity(cams_dir, tmp_path):
    boundary_dir = tmp_path / "boundary"
    boundary_dir.mkdir()
    (boundary_dir / "settings.json").write_text('{"stage": "rca-boundary", "image_scale": Infinity}')
    result, seconds = run_script(
        "rca-pseudo",
        tmp_path / "run",
        f"cams_dir={cams_dir}",
        "refine=random_walk",
        f"refine.boundary_dir={boundary_dir}",
        "progress=false",
    )
    assert f"{boundary_dir / 'settings.json'}: not readable as JSON (Infinity" in the_one_line(
        "rca-pseudo", result, seconds
    )
    assert not any(path.suffix in {".json", ".png"} for path in (tmp_path / "run").rglob("*"))


# ------------------------------------------------------------------------------------- a damaged dataset
@pytest.mark.parametrize(("height", "width"), [(-5, 48), (0, 48), (40, 10**6)])
def test_a_coco_image_of_impossible_size_is_named(tmp_path, height, width):
    coco = TinyCOCO(tmp_path / "coco2014")
    images = [
        {**image, "height": height, "width": width} if image["id"] == 9 else image
        for image in coco.images["train2014"]
    ]
    path = coco.write_json("train2014", images=images)
    with pytest.raises(InvalidData, match=rf"^{re.escape(str(path))}: image 9 has height"):
        read_coco_instances(path)


@pytest.mark.slow
def test_rca_train_stops_on_a_coco_image_of_height_minus_5(tmp_path):
    coco = TinyCOCO(tmp_path / "coco2014")
    images = [{**image, "height": -5} if image["id"] == 9 else image for image in coco.images["train2014"]]
    path = coco.write_json("train2014", images=images)
    run_dir = tmp_path / "run"
    result, seconds = rca_train(["data=coco", f"data.root={coco.root}", "data.mask_workers=0"], run_dir)
    line = assert_stopped_before_training(result, seconds, run_dir)
    assert (
        line
        == f"rca-train: error: {path}: image 9 has height -5 and width 48; expected 1 to 65535 pixels each"
    )


# -------------------------------------------------------------------------------------- a killed worker
@pytest.mark.slow
def test_a_killed_crf_worker_ends_rca_pseudo_at_once_and_the_written_masks_resume(cams_dir, tmp_path):
    run_dir = tmp_path / "run"
    masks_dir = run_dir / "pseudo_masks"
    image_ids = sorted(path.stem for path in cams_dir.glob("*.npz"))
    overrides = [
        f"cams_dir={cams_dir}",
        "refine=none",
        f"refine._target_={__name__}.DyingRefiner",
        "num_workers=2",
        "progress=false",
    ]
    # A process of its own, whose pool workers see $RCA_TEST_KILL_ON_IMAGE (this process's pool would get the
    # environment of its forkserver, started once); it imports this module to build the refiner.
    importable = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    }
    result, seconds = run_process(
        "rca-pseudo", run_dir, *overrides, env={**importable, KILL_ON_IMAGE: image_ids[7]}
    )
    line = the_one_line("rca-pseudo", result, seconds)
    match = re.fullmatch(
        rf"pseudo masks in {re.escape(str(masks_dir))}: a worker process died \(killed by a signal or for "
        r"lack of memory\?\); (\d+) of the 12 masks to write were written and are kept, rerun to resume",
        line,
    )
    assert match, line
    kept = [image_id for image_id in image_ids if mask_file_is_complete(masks_dir / f"{image_id}.png")]
    assert len(kept) == int(match.group(1)) and 0 < len(kept) < 12 and image_ids[7] not in kept
    assert not (run_dir / "pseudo.json").exists()

    assert KILL_ON_IMAGE not in os.environ  # the rerun, in this process: no worker kills itself
    result, _ = run_script("rca-pseudo", run_dir, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "pseudo.json").read_text())
    assert (summary["total"], summary["written"], summary["skipped"]) == (12, 12 - len(kept), len(kept))
    assert all(mask_file_is_complete(masks_dir / f"{image_id}.png") for image_id in image_ids)

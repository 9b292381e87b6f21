"""What one ``rca-pipeline`` stage hands the next through a file is data: typed values read against a fixed
schema and set on the next stage's composed config, never Hydra override strings; run folder paths holding
``,``, ``=`` or ``${`` reach every stage literally."""

import json
import math
import re
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from rca_lightning.pipeline import STAGES
from rca_lightning.pseudo.stage_records import read_best_cam_threshold, read_cams_record
from rca_lightning.utils.errors import InvalidData
from tests.conftest import CONFIG_DIR
from tests.console_runs import ScriptResult, run_in_process
from tests.stage_helpers import TINY_STAGE_DATA, make_training_run
from tests.test_pipeline import make_pipeline

BY_NAME = {stage.name: stage for stage in STAGES}
# A folder name that Hydra's override grammar would split (a sweep) and one OmegaConf would interpolate.
SWEEP_LIKE = "seed=1,lr=0.1"
INTERPOLATION_LIKE = "run ${oc.env:HOME} ${x}"


def write_json(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def cams_record(**extra: object) -> dict:
    return {"checkpoint": "/runs/c.ckpt", "checkpoint_selection": "last", "seeds": "cams", **extra}


def rca_pipeline(*overrides: str) -> ScriptResult:
    """``rca-pipeline``, run in this process (``tests/console_runs.py``)."""
    return run_in_process("rca-pipeline", *overrides)


def resumed_run(tmp_path: Path) -> tuple[Path, list[str]]:
    """A run folder whose classifier (an existing run) and cams stage finished: resuming it composes the
    pseudo-mask stage from ``cams/cams.json``."""
    trained = tmp_path / "trained"
    write_json(trained / "metrics.json", {})
    run_dir = tmp_path / "run"
    off = [f"stages.{name}.enabled=false" for name in ("cam_eval", "pseudo_mask_eval", "segmentation")]
    return run_dir, [f"train_dir={trained}", f"hydra.run.dir={run_dir}", *off]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        # Override strings as the earlier record held them: they built a class when the pipeline resumed.
        (
            cams_record(
                pseudo_mask_overrides=[
                    "refine.crf=null",
                    "refine.crf={_target_:pathlib.Path.touch,self:'MARKER'}",
                ]
            ),
            "pseudo_mask_overrides: override strings are not applied; expected pseudo_mask_settings",
        ),
        (
            cams_record(pseudo_mask_settings={"crf": {"_target_": "pathlib.Path.touch", "self": "MARKER"}}),
            r"pseudo_mask_settings\.crf: expected true or false",
        ),
        (["not", "an", "object"], "holds an array, expected the record rca-cams wrote"),
    ],
)
@pytest.mark.slow
def test_a_cams_record_that_is_not_the_schema_stops_a_resumed_pipeline_in_one_line(tmp_path, record, message):
    run_dir, overrides = resumed_run(tmp_path)
    marker = tmp_path / "marker"
    record_file = run_dir / "cams" / "cams.json"
    write_json(record_file, json.loads(json.dumps(record).replace("MARKER", str(marker))))
    result = rca_pipeline(*overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"rca-pipeline: error: {record_file}: ") and "Traceback" not in result.stderr
    assert re.search(message, line), line
    assert not marker.exists()
    assert not (run_dir / "pseudo_masks").exists()


@pytest.mark.slow
def test_an_irn_threshold_out_of_range_stops_the_pipeline_in_one_line(tmp_path):
    run_dir, overrides = resumed_run(tmp_path)
    write_json(run_dir / "cams" / "cams.json", cams_record())
    record_file = write_json(run_dir / "cam_eval" / "eval.json", {"cams": {"best_threshold": math.nan}})
    walk = ["refine=random_walk", "irn_thresholds=best_cam_threshold"]
    result = rca_pipeline(*overrides[:2], *walk)
    assert result.returncode == 2, result.stderr[-2000:]
    expected = f"rca-pipeline: error: {record_file}: not readable as JSON (NaN is not a finite number)"
    assert result.stderr.strip().splitlines()[-1].startswith(expected)
    assert not (run_dir / "ir_labels").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"cams": {"best_threshold": 1.5}},
            r"cams\.best_threshold: expected a finite number in \[0, 1\], got 1\.5",
        ),
        ({"cams": {"best_threshold": "0.3"}}, r"cams\.best_threshold: expected a finite number in \[0, 1\]"),
        ({"cams": {}}, r"cams\.best_threshold: expected the CAM evaluation's record"),
        ("Infinity", r"not readable as JSON \(Infinity is not a finite number\)"),
        ([0.3], r"holds an array, expected the record rca-eval wrote"),
    ],
)
def test_the_best_cam_threshold_is_a_number_in_the_unit_interval(tmp_path, content, message):
    record_file = tmp_path / "eval.json"
    record_file.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(InvalidData, match=rf"^{record_file}: {message}"):
        read_best_cam_threshold(record_file)
    settings = make_pipeline(
        tmp_path / "run", ["refine=random_walk", "irn_thresholds=best_cam_threshold"]
    ).settings
    (tmp_path / "run" / "cam_eval").mkdir(parents=True)
    (tmp_path / "run" / "cam_eval" / "eval.json").write_text(record_file.read_text())
    (record,) = BY_NAME["ir_labels"].recorded(settings)
    with pytest.raises(InvalidData, match=rf"eval\.json: {message}"):
        record.read(settings)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"pseudo_mask_settings": {"background_threshold": -0.1}},
            r"background_threshold: expected a finite",
        ),
        (
            {"pseudo_mask_settings": {"background_threshold": True}},
            r"background_threshold: expected a finite",
        ),
        ({"pseudo_mask_settings": {"crf": "null"}}, r"pseudo_mask_settings\.crf: expected true or false"),
        ({"pseudo_mask_settings": {"_target_": "os.system"}}, r"_target_: unknown setting; expected one of"),
        (
            {"pseudo_mask_settings": ["+refine.x._target_=os.system"]},
            r"pseudo_mask_settings: expected a mapping",
        ),
        ({"scales": [1.0, 0.0]}, r"scales: expected 1 to \d+ finite numbers in \(0, 4\]"),
        ({"scales": "1.0"}, r"scales: expected 1 to \d+ finite numbers"),
        ({"flip": 1}, r"flip: expected true or false, got 1"),
        ({"seeds": "../x"}, r"seeds: expected one of \['cams', 'attention', 'max'\]"),
        ({"checkpoint": 3}, r"checkpoint: expected a string, got 3"),
    ],
)
def test_every_value_of_the_cams_record_is_checked_against_its_schema(tmp_path, extra, message):
    record_file = write_json(tmp_path / "cams.json", cams_record(**extra))
    with pytest.raises(InvalidData, match=rf"^{record_file}: .*{message}"):
        read_cams_record(record_file)


def config_to_run(run_dir: Path, overrides: list[str], stage) -> DictConfig:
    """``stage``'s config as the runner would run it now: planned, its recorded values read and set."""
    pipeline = make_pipeline(run_dir, overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return pipeline.plan().compose(stage).config_to_run(pipeline.settings)


@pytest.mark.slow
def test_the_method_settings_reach_the_composed_config_as_values_and_the_user_overrides_win(tmp_path):
    settings = {"background_threshold": 0.2, "crf": False}
    write_json(tmp_path / "cams" / "cams.json", cams_record(pseudo_mask_settings=settings))
    pseudo_masks = BY_NAME["pseudo_masks"]
    own = 'stages.pseudo_masks.overrides=["refine.background_threshold=0.4","refine.crf.iterations=3"]'
    from_method, chosen = (
        config_to_run(tmp_path, [], pseudo_masks),
        config_to_run(tmp_path, [own], pseudo_masks),
    )
    assert from_method.refine.background_threshold == 0.2 and from_method.refine.crf is None
    assert chosen.refine.background_threshold == 0.4 and chosen.refine.crf.iterations == 3
    # With the CRF: the method leaves the refiner's CRF as composed.
    write_json(tmp_path / "cams" / "cams.json", cams_record(pseudo_mask_settings={"crf": True}))
    with_crf = config_to_run(tmp_path, [], pseudo_masks)
    assert with_crf.refine.crf.iterations == 10 and with_crf.refine.background_threshold is None


@pytest.mark.slow
def test_run_folders_with_commas_equals_and_interpolations_reach_every_stage_literally(tmp_path):
    base = tmp_path / SWEEP_LIKE
    trained, run_dir = base / f"trained {INTERPOLATION_LIKE}", base / INTERPOLATION_LIKE
    write_json(trained / "metrics.json", {})
    write_json(trained / "attention" / "index.json", {})
    for stage in ("classifier", "boundary", "segmentation"):
        (run_dir / stage / "checkpoints").mkdir(parents=True)
        (run_dir / stage / "checkpoints" / "last.ckpt").touch()
    escaped = str(trained).replace("${", "\\${")
    pipeline = make_pipeline(run_dir, ["refine=random_walk", "seeds=attention", f"train_dir='{escaped}'"])
    own_classifier = make_pipeline(run_dir, [])
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        plan = pipeline.plan()
        classifier = own_classifier.plan().compose(STAGES[0]).config
    composed = {}
    for planned in plan.to_run:  # the stages after the given classifier, their configs as they would run
        composed[planned.stage.name] = planned.config_to_run(plan.settings)
        planned.save(composed[planned.stage.name])
    assert classifier.ckpt_path == str(run_dir / "classifier" / "checkpoints" / "last.ckpt")
    cams, pseudo_masks = composed["cams"], composed["pseudo_masks"]
    assert cams.train_dir == str(trained) and cams.attention_dir == str(trained / "attention")
    assert cams.cams_dir == str(run_dir / "cams" / "maps")
    assert composed["cam_eval"].cams_dir == str(run_dir / "cams" / "maps")
    assert composed["ir_labels"].masks_dir == str(run_dir / "ir_labels" / "masks")
    boundary = composed["boundary"]
    assert boundary.classifier_dir == str(trained)
    assert boundary.ir_labels_dir == str(run_dir / "ir_labels" / "masks")
    assert boundary.ckpt_path == str(run_dir / "boundary" / "checkpoints" / "last.ckpt")
    assert pseudo_masks.refine.boundary_dir == str(run_dir / "boundary" / "boundary_maps")
    assert pseudo_masks.masks_dir == str(run_dir / "pseudo_masks" / "masks")
    segmentation = composed["segmentation"]
    # seg_train.yaml's data.train_masks_dir interpolates pseudo_masks_dir: it reads the literal path too.
    assert segmentation.data.train_masks_dir == str(run_dir / "pseudo_masks" / "masks")
    assert segmentation.ckpt_path == str(run_dir / "segmentation" / "checkpoints" / "last.ckpt")
    for name, cfg in composed.items():
        assert cfg.paths.output_dir == str(run_dir / name), name
        # What the stage's folder records reads back as the same literal paths.
        saved = OmegaConf.load(run_dir / name / ".hydra" / "config.yaml")
        assert OmegaConf.to_container(saved, resolve=True) == OmegaConf.to_container(cfg, resolve=True), name
        overrides = OmegaConf.load(run_dir / name / ".hydra" / "overrides.yaml")
        assert not any(str(run_dir) in override for override in overrides), name


@pytest.mark.slow
def test_a_pipeline_runs_with_a_sweep_like_run_folder_and_an_interpolation_like_classifier_folder(tmp_path):
    """End to end (classifier given, segmentation off). Hydra itself interpolates ``hydra.run.dir``'s value
    when it configures logging, so the ``${`` folder is the classifier's, given as ``train_dir``."""
    base = tmp_path / SWEEP_LIKE
    trained, run_dir = base / f"trained {INTERPOLATION_LIKE}", base / "run"
    make_training_run(trained, tmp_path / "cache")
    summary = json.loads((trained / "metrics.json").read_text())
    write_json(trained / "metrics.json", {**summary, "metrics": {}})
    escaped = str(trained).replace("${", "\\${")
    result = rca_pipeline(
        *TINY_STAGE_DATA,
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"train_dir='{escaped}'",
        f"hydra.run.dir='{run_dir}'",
        "trainer=cpu",
        'stages.cams.overrides=["scales=[1.0]"]',
        'stages.cam_eval.overrides=["progress=false"]',
        'stages.pseudo_masks.overrides=["progress=false","num_workers=0"]',
        'stages.pseudo_mask_eval.overrides=["progress=false"]',
        "stages.segmentation.enabled=false",
        "report.figure_images=2",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["stages"] == ["classifier", "cams", "cam_eval", "pseudo_masks", "pseudo_mask_eval"]
    assert report["checkpoints"]["classifier"]["checkpoint"] == str(trained / "checkpoints" / "last.ckpt")
    cams = OmegaConf.load(run_dir / "cams" / ".hydra" / "config.yaml")
    assert cams.train_dir == str(trained) and cams.cams_dir == str(run_dir / "cams" / "maps")
    assert len(list((run_dir / "pseudo_masks" / "masks").glob("*.png"))) == 12

"""``rca-pipeline`` with IRN's random walk: every trained stage (classifier, boundary network, segmentation
network) in one run, logged to csv, TensorBoard and wandb (offline: no API key), and the report logged once
at the end into the same wandb group."""

import csv
import json
import math
import struct
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf
from tensorboardX.proto import event_pb2

from rca_lightning.pipeline.loggers import REPORT_RUN, logger_group
from rca_lightning.utils.table_logging import log_table
from tests.pipeline_runs import pipeline_environment, run_pipeline
from tests.stage_helpers import assert_report_is_consistent
from tests.test_loggers import item_key, wandb_records
from tests.test_pipeline import composed_stages, make_pipeline

TRAINED_STAGES = ("classifier", "boundary", "segmentation")


def read_tensorboard_texts(log_dir: Path) -> dict[str, str]:
    """tag -> text of every text summary in the folder's event files (TFRecord: length, CRC, data, CRC)."""
    found = {}
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "text":
                    found[value.tag] = value.tensor.string_val[0].decode()
    return found


@pytest.fixture(scope="module")
def random_walk_run(tmp_path_factory) -> tuple[Path, object]:
    """A tiny ``refine=random_walk`` run with ``logger=[csv,tensorboard,wandb]``, in an environment with no
    wandb key and no WANDB_MODE: the config itself must decide to run offline."""
    base = tmp_path_factory.mktemp("random_walk")
    run_dir, cache, empty_netrc = base / "run", base / "cache", base / "netrc"
    empty_netrc.write_text("")
    environment = {
        key: value
        for key, value in pipeline_environment().items()
        if key not in ("WANDB_MODE", "WANDB_API_KEY")
    }
    environment |= {"NETRC": str(empty_netrc), "WANDB_DIR": str(base / "wandb_home")}
    # What is learnt is not checked here: one epoch of the boundary network and of the segmentation network
    # (on 64 px crops of the 64 px images, scored at one scale), CAMs at one scale. These lists replace
    # those pipeline_command sets (Hydra keeps the last value of a key); the IR labels keep their pool.
    boundary = '["trainer.max_epochs=1","trainer.enable_progress_bar=false","data.batch_size=4"]'
    segmentation = [
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "crop_size=64",
        "seg_model.tta_scales=[1.0]",
        "seg_model.tta_flip=false",
    ]
    result = run_pipeline(
        run_dir,
        cache,
        "refine=random_walk",
        'stages.cams.overrides=["scales=[1.0]"]',
        'stages.ir_labels.overrides=["progress=false","num_workers=2"]',
        'stages.ir_label_eval.overrides=["progress=false"]',
        f"stages.boundary.overrides={boundary}",
        f"stages.segmentation.overrides={json.dumps(segmentation, separators=(',', ':'))}",
        "logger=[csv,tensorboard,wandb]",
        own_process=True,
        environment=environment,
        epochs=2,
        segmentation_epochs=1,
    )
    return run_dir, result


@pytest.mark.slow
def test_refine_random_walk_runs_irn_end_to_end(random_walk_run):
    run_dir, result = random_walk_run
    report = json.loads((run_dir / "report.json").read_text())
    assert_report_is_consistent(report)
    assert report["stages"][3:6] == ["ir_labels", "ir_label_eval", "boundary"]
    assert 0 < report["ir_ignored_fraction"] < 1 and math.isfinite(report["ir_label_miou"])
    assert report["pseudo_ignored_fraction"] == 0  # the random walk labels every pixel
    assert math.isfinite(report["seg_miou"]) and f"{report['ir_label_miou']:.1f}" in result.stdout
    train_ids = sorted(path.stem for path in (run_dir / "pseudo_masks" / "masks").glob("*.png"))
    maps = sorted(path.stem for path in (run_dir / "boundary" / "boundary_maps").glob("*.npy"))
    assert maps == train_ids and len(maps) == 48
    pseudo_cfg = OmegaConf.load(run_dir / "pseudo_masks" / ".hydra" / "config.yaml")
    assert pseudo_cfg.refine._target_.endswith("RandomWalkRefiner")
    assert (run_dir / "figures" / "confusion_ir_label.png").is_file()


def _wandb_runs(run_dir: Path) -> dict[str, tuple[Path, list]]:
    """Run name -> (offline run folder, its records), for every wandb run under ``run_dir``."""
    runs = {}
    for folder in run_dir.rglob("offline-run-*"):
        records = wandb_records(next(folder.glob("run-*.wandb")))
        (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
        assert run.display_name not in runs, f"two wandb runs named {run.display_name}"
        runs[run.display_name] = (folder, records)
    return runs


def _history(records: list) -> dict[str, object]:
    """Every key the run's history logged, with its last value."""
    return {item_key(item): json.loads(item.value_json) for r in records for item in r.history.item}


@pytest.mark.slow
def test_every_trained_stage_and_the_report_log_to_one_wandb_group(random_walk_run):
    run_dir, _ = random_walk_run
    report = json.loads((run_dir / "report.json").read_text())
    runs = _wandb_runs(run_dir)
    assert set(runs) == {*TRAINED_STAGES, REPORT_RUN}
    for name, (folder, records) in runs.items():
        (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
        assert run.job_type == name
        # Each stage's run sits in its own folder; the report's in the run folder.
        assert folder.parent.parent == (run_dir if name == REPORT_RUN else run_dir / name)
    groups = {
        record.run.run_group
        for _, records in runs.values()
        for record in records
        if record.WhichOneof("record_type") == "run"
    }
    assert len(groups) == 1 and groups.pop().startswith("run-")

    # What each trained stage logs while it trains.
    assert "val/cam_mIoU" in _history(runs["classifier"][1])
    assert "train/loss" in _history(runs["boundary"][1])
    assert _history(runs["segmentation"][1])["test/seg_mIoU"] == pytest.approx(report["seg_miou"], abs=1e-3)

    # The report: its scores, the per-class IoU table and every figure, once.
    folder, records = runs[REPORT_RUN]
    history = _history(records)
    for key in ("cam_miou", "ir_label_miou", "pseudo_label_miou", "seg_miou", "classifier_val_cam_miou"):
        assert history[f"report/{key}"] == pytest.approx(report[key]), key
    assert history["report/per_class_iou/_type"] == "table-file"
    (table_file,) = (folder / "files" / "media" / "table" / "report").glob("per_class_iou_*.table.json")
    table = json.loads(table_file.read_text())
    stages = ["cam", "ir_label", "pseudo_label", "seg"]
    counts = [f"{what}_{stage}" for what in ("images", "pixels") for stage in stages]
    assert table["columns"] == ["class", *stages, *counts]
    for row in table["data"]:
        for column, value in zip(table["columns"][1:], row[1:], strict=True):
            what, _, stage = column.partition("_") if column in counts else ("iou", "", column)
            expected = report[f"per_class_{what}"][stage][row[0]]
            assert value == pytest.approx(expected), (row[0], column)
    figures = sorted(Path(path).stem for path in report["figures"])
    assert "grid" in figures and "confusion_ir_label" in figures
    for figure in figures:
        assert history[f"report/{figure}/count"] == 1, figure
        assert list((folder / "files" / "media" / "images" / "report").glob(f"{figure}_*.png")), figure

    # TensorBoard: one folder for the run, a sub-folder per logged stage.
    tensorboard = run_dir / "tensorboard"
    assert sorted(path.name for path in tensorboard.iterdir()) == sorted([*TRAINED_STAGES, REPORT_RUN])
    for stage in tensorboard.iterdir():
        assert list(stage.glob("events.out.tfevents.*")), stage.name


@pytest.mark.slow
def test_trained_stages_log_where_the_command_line_asked_in_one_group(tmp_path):
    overrides = [
        "logger=[csv,tensorboard,wandb]",
        "logger.wandb.project=mine",
        'stages.segmentation.overrides=["logger.wandb.name=my-seg"]',
    ]
    composed = composed_stages(tmp_path / "run", overrides)
    configs = {name: cfg for name, cfg in composed.items() if name in TRAINED_STAGES}
    groups = {cfg.logger.wandb.group for cfg in configs.values()}
    assert groups == {
        logger_group(make_pipeline(tmp_path / "run", overrides).settings.cfg.logger, tmp_path / "run")
    }
    for name, cfg in configs.items():
        assert set(cfg.logger) == {"csv", "tensorboard", "wandb"}, name
        assert cfg.logger.wandb.project == "mine"  # the command line's logger settings reach every stage
        assert cfg.logger.wandb.job_type == name
        assert cfg.logger.tensorboard.save_dir == str(tmp_path / "run")
        assert cfg.logger.tensorboard.version == name
        assert cfg.logger.csv.save_dir == str(tmp_path / "run" / name)  # csv files stay in the stage's folder
    assert configs["classifier"].logger.wandb.name == "classifier"
    assert configs["segmentation"].logger.wandb.name == "my-seg"  # the stage's own override wins
    # The command line's group is the run's; without one, each run folder has its own.
    assert (
        logger_group(
            make_pipeline(tmp_path / "b", ["logger=wandb", "logger.wandb.group=g"]).settings.cfg.logger,
            tmp_path,
        )
        == "g"
    )
    assert logger_group(None, tmp_path / "a" / "run") != logger_group(None, tmp_path / "b" / "run")


def test_a_stage_logs_with_the_default_csv_logger_when_none_was_chosen(tmp_path):
    cfg = composed_stages(tmp_path / "run", [])["segmentation"]
    assert set(cfg.logger) == {"csv"} and cfg.logger.csv.save_dir == str(tmp_path / "run" / "segmentation")


def test_tables_reach_csv_and_tensorboard(tmp_path):
    columns, rows = ["class", "cam", "seg"], [["background", 80.5, 70.0], ["disc", None, 12.25]]
    csv_logger = CSVLogger(tmp_path, name="csv", version="")
    tensorboard = TensorBoardLogger(tmp_path, name="tensorboard", version="")
    log_table([csv_logger, tensorboard], "report/per_class_iou", columns, rows)
    with open(tmp_path / "csv" / "tables" / "report" / "per_class_iou.csv") as file:
        assert list(csv.reader(file)) == [columns, ["background", "80.5", "70.0"], ["disc", "", "12.25"]]
    tensorboard.finalize("success")  # closes the event file
    markdown = "| class | cam | seg |\n|---|---|---|\n| background | 80.5 | 70.0 |\n| disc |  | 12.25 |"
    assert read_tensorboard_texts(tmp_path / "tensorboard") == {"report/per_class_iou/text_summary": markdown}
    with pytest.raises(ValueError, match="3 cells"):
        log_table(csv_logger, "report/x", columns, [["background", 1.0]])

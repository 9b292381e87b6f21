"""Hydra sweeps of `rca-train`: a 2 x 2 grid with the basic launcher, and a 3-trial Optuna search."""

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import TINY_DATA_OVERRIDES, TINY_MODEL_OVERRIDES
from tests.console_runs import ScriptResult, run_in_process

ONE_SHORT_EPOCH = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "callbacks.cam_images=null",
]


def rca_train(tmp_path: Path, *overrides: str, multirun: bool = False) -> ScriptResult:
    """``rca-train`` (``--multirun``: a sweep into ``tmp_path/sweep``) in this process, from ``tmp_path``."""
    arguments = [
        *(["--multirun"] if multirun else []),
        *TINY_DATA_OVERRIDES,
        *TINY_MODEL_OVERRIDES,
        *ONE_SHORT_EPOCH,
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *overrides,
    ]
    result = run_in_process("rca-train", *arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def job_folders(sweep_dir: Path) -> list[Path]:
    return sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )


@pytest.mark.slow
def test_grid_multirun_gives_each_job_its_own_folder(tmp_path):
    rca_train(
        tmp_path, "model.contrast_weight=0.005,0.02", "model.confidence_threshold=0.5,0.7", multirun=True
    )
    jobs = job_folders(tmp_path / "sweep")
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    combinations = set()
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        chosen = dict(item.split("=", 1) for item in overrides if item.startswith("model."))
        combinations.add((chosen["model.contrast_weight"], chosen["model.confidence_threshold"]))
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert str(config["model"]["contrast_weight"]) == chosen["model.contrast_weight"]
        summary = json.loads((job / "metrics.json").read_text())
        assert summary["output_dir"] == str(job) and "val/cam_mIoU" in summary["metrics"]
        assert (job / "checkpoints" / "last.ckpt").is_file() and (job / "csv" / "metrics.csv").is_file()
    assert combinations == {(w, t) for w in ("0.005", "0.02") for t in ("0.5", "0.7")}


@pytest.mark.slow
def test_optuna_sweep_maximises_the_returned_val_cam_miou(tmp_path):
    rca_train(
        tmp_path,
        "hparams_search=rca_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    sweep_dir = tmp_path / "sweep"
    jobs = job_folders(sweep_dir)
    assert len(jobs) == 3
    job_values = [json.loads((job / "metrics.json").read_text())["metrics"]["val/cam_mIoU"] for job in jobs]

    study = optuna.load_study(study_name="rca", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = sorted(study.trials, key=lambda trial: trial.number)
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    # Each trial's value is what its job returned: the job's val/cam_mIoU.
    assert [trial.value for trial in trials] == pytest.approx(job_values)
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(job_values))
    assert set(results["best_params"]) == {
        "model.contrast_weight",
        "model.confidence_threshold",
        "model.optimizer.lr",
        "model.contrast_start_epoch",
    }
    for trial, job in zip(trials, jobs, strict=True):
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["model"]["contrast_weight"] == pytest.approx(trial.params["model.contrast_weight"])
        assert 0.001 <= trial.params["model.contrast_weight"] <= 0.1

"""Run folders moved or copied whole: an output folder's settings.json (a resume with the same settings
continues, other settings are refused, paths that moved with the run count as the same) and a classifier run's
checkpoint (read from the moved folder)."""

import json
import shutil

import pytest

from rca_lightning.inference.trained_runs import resolve_training_run
from rca_lightning.tasks.stage_settings import claim_output_folder
from rca_lightning.utils.errors import InvalidData, InvalidSetting
from tests.stage_helpers import make_training_run


def settings_of(run, **extra):
    return {"cams_dir": str(run / "cams" / "maps"), "scales": [1.0], "dataset": {"root": "/data"}, **extra}


def test_a_resume_with_the_same_settings_continues_and_other_settings_are_refused(tmp_path):
    run = tmp_path / "run"
    masks = run / "pseudo_masks" / "masks"
    masks.mkdir(parents=True)
    claim_output_folder(masks, settings_of(run))
    claim_output_folder(masks, settings_of(run))
    with pytest.raises(InvalidSetting, match=r"records other settings for \['scales'\]"):
        claim_output_folder(masks, settings_of(run, scales=[1.0, 2.0]))
    with pytest.raises(InvalidSetting, match=r"records other settings for \['cams_dir'\]"):
        claim_output_folder(masks, settings_of(tmp_path / "elsewhere"))


def test_a_run_folder_moved_whole_resumes_and_its_moved_paths_count_as_the_same(tmp_path):
    run, moved = tmp_path / "run", tmp_path / "copies" / "moved"
    masks = run / "pseudo_masks" / "masks"
    masks.mkdir(parents=True)
    claim_output_folder(masks, settings_of(run))
    shutil.copytree(run, moved)
    moved_masks = moved / "pseudo_masks" / "masks"
    claim_output_folder(moved_masks, settings_of(moved))  # the cams moved with the masks: the same settings
    claim_output_folder(moved_masks, settings_of(run))  # the original cams, at the same absolute path
    with pytest.raises(InvalidSetting, match=r"records other settings for \['cams_dir'\]"):
        claim_output_folder(moved_masks, settings_of(tmp_path / "copies"))
    # Outside the run folder nothing moves: a dataset root is compared as it is.
    with pytest.raises(InvalidSetting, match=r"records other settings for \['dataset'\]"):
        claim_output_folder(moved_masks, {**settings_of(moved), "dataset": {"root": "/other"}})
    assert json.loads((moved_masks / "settings.json").read_text())["written_in"] == str(masks.resolve())


def test_a_classifier_run_moved_whole_reads_its_own_checkpoint(tmp_path):
    original, moved = tmp_path / "original", tmp_path / "elsewhere" / "moved"
    original.mkdir()
    make_training_run(original, tmp_path / "cache")
    summary_file = original / "metrics.json"
    summary = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**summary, "output_dir": str(original)}))
    assert resolve_training_run(original, None, None).checkpoint == original / "checkpoints" / "last.ckpt"
    shutil.move(original, moved)
    assert resolve_training_run(moved, None, None).checkpoint == moved / "checkpoints" / "last.ckpt"
    # A checkpoint named outside the run is read where it is; a checkpoint that is not a path is refused.
    outside = tmp_path / "weights.ckpt"
    shutil.copy(moved / "checkpoints" / "last.ckpt", outside)
    (moved / "metrics.json").write_text(json.dumps({**summary, "checkpoint": str(outside)}))
    assert resolve_training_run(moved, None, None).checkpoint == outside
    (moved / "metrics.json").write_text(json.dumps({**summary, "checkpoint": 5}))
    with pytest.raises(InvalidData, match=r"metrics\.json: checkpoint is 5; expected a file path"):
        resolve_training_run(moved, None, None)

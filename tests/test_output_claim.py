"""An output folder's settings.json: a resume with the same settings continues, other settings are refused,
and a run folder moved whole (its paths with it) still resumes."""

import json
import shutil

import pytest

from rca_lightning.tasks.stage_settings import claim_output_folder
from rca_lightning.utils.errors import InvalidSetting


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

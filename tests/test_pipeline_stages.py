"""``rca-pipeline``'s stage table: stages switched off, what the report then holds, every stage's config as
a tree."""

import pytest
from hydra import initialize_config_dir

from rca_lightning.cli.pipeline import STAGES, run_pipeline
from rca_lightning.utils.errors import InvalidSetting
from tests.conftest import CONFIG_DIR
from tests.test_pipeline import make_pipeline


def test_a_stage_whose_output_a_running_stage_reads_cannot_be_switched_off(tmp_path):
    off = [f"stages.{name}.enabled=false" for name in ("pseudo_masks", "pseudo_mask_eval", "segmentation")]
    alone, with_readers = make_pipeline(tmp_path, off[:1]), make_pipeline(tmp_path, off)
    assert [stage.name for stage in with_readers.to_run()] == ["classifier", "cams", "cam_eval"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(
            InvalidSetting, match=r"^stages\.pseudo_masks\.enabled=false: stage pseudo_mask_eval"
        ):
            alone.check_settings()
        with_readers.check_settings()  # switched off with the stages that read it: the rest runs
    # A finished stage may be switched off: the stages after it read its files.
    (tmp_path / "pseudo_masks").mkdir()
    (tmp_path / "pseudo_masks" / "pseudo.json").write_text("{}")
    finished = make_pipeline(tmp_path, off[:1])
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        finished.check_settings()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.cams.enabled=maybe", r"stages\.cams\.enabled: expected true or false, got 'maybe'"),
        ("+stages.cams.extra=1", r"stages\.cams: expected enabled and overrides"),
    ],
)
def test_stage_entries_are_checked(tmp_path, override, message):
    pipeline = make_pipeline(tmp_path, [override])
    with pytest.raises(InvalidSetting, match=message):
        pipeline.check_settings()


def test_print_config_shows_every_enabled_stage_and_runs_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = [
        "print_config=true",
        "stages.cam_eval.enabled=false",
        'stages.cams.overrides=["scales=[1.0]"]',
    ]
    assert run_pipeline(overrides, run_dir=run_dir) is None
    printed = capsys.readouterr().out
    assert not run_dir.exists()
    names = [stage.name for stage in STAGES if stage.name != "cam_eval"]
    positions = [printed.index(f"── {name}\n") for name in names]
    assert positions == sorted(positions) and "── cam_eval\n" not in printed
    # Each stage's own composed values, resolved: the cams stage's scales override, the segmentation recipe.
    cams_part = printed[positions[1] : positions[2]]
    assert "scales:\n│   │   - 1.0\n" in cams_part and "split: train\n" in cams_part
    seg_part = printed[positions[-1] :]
    assert "crop_size: 128\n" in seg_part and "train_masks_dir:" in seg_part

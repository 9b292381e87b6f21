"""``rca-pipeline``'s declared stages and their plan: stages switched off, what each stage reads and is given,
what the report then holds, every stage's config as a tree."""

import pytest
from hydra import initialize_config_dir

from rca_lightning.pipeline import STAGES, run_pipeline
from rca_lightning.pipeline.stages import irn_thresholds, pixel_label_settings
from rca_lightning.report.pipeline_report import build_report, format_report
from rca_lightning.utils.errors import InvalidSetting
from tests.conftest import CONFIG_DIR
from tests.test_pipeline import make_pipeline


def plan_of(run_dir, overrides):
    """The checked plan of a run (every stage to run composed)."""
    pipeline = make_pipeline(run_dir, overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return pipeline.plan()


def planned_names(run_dir, overrides) -> list[str]:
    return [planned.stage.name for planned in plan_of(run_dir, overrides).to_run]


def test_a_stage_whose_output_a_running_stage_reads_cannot_be_switched_off(tmp_path):
    off = [f"stages.{name}.enabled=false" for name in ("pseudo_masks", "pseudo_mask_eval", "segmentation")]
    # Switched off with the stages that read it: the rest runs.
    assert planned_names(tmp_path, off) == ["classifier", "cams", "cam_eval"]
    with pytest.raises(InvalidSetting, match=r"^stages\.pseudo_masks\.enabled=false: stage pseudo_mask_eval"):
        plan_of(tmp_path, off[:1])
    # A finished stage may be switched off: the stages after it read its files.
    (tmp_path / "pseudo_masks").mkdir()
    (tmp_path / "pseudo_masks" / "pseudo.json").write_text("{}")
    assert "pseudo_mask_eval" in planned_names(tmp_path, off[:1])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.cams.enabled=maybe", r"stages\.cams\.enabled: expected true or false, got 'maybe'"),
        ("+stages.cams.extra=1", r"stages\.cams: expected enabled and overrides"),
    ],
)
def test_stage_entries_are_checked(tmp_path, override, message):
    with pytest.raises(InvalidSetting, match=message):
        plan_of(tmp_path, [override])


@pytest.mark.slow
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
    skipped = {"cam_eval", "ir_labels", "ir_label_eval", "boundary"}  # IRN's: refine=random_walk only
    names = [stage.name for stage in STAGES if stage.name not in skipped]
    positions = [printed.index(f"── {name}\n") for name in names]
    assert positions == sorted(positions) and "── cam_eval\n" not in printed
    # Each stage's own composed values, resolved: the cams stage's scales override, the segmentation recipe.
    cams_part = printed[positions[1] : positions[2]]
    assert "scales:\n│   │   - 1.0\n" in cams_part and "split: train\n" in cams_part
    seg_part = printed[positions[-1] :]
    assert "crop_size: 128\n" in seg_part and "train_masks_dir:" in seg_part


def test_refine_random_walk_adds_irn_stages_and_gives_the_refiner_its_maps(tmp_path):
    plain_overrides = ["refine=none", "refine.background_threshold=0.3"]
    assert not {"ir_labels", "ir_label_eval", "boundary"} & set(planned_names(tmp_path, plain_overrides))
    plain = make_pipeline(tmp_path, plain_overrides).settings
    by_name = {stage.name: stage for stage in STAGES}
    pseudo_overrides = by_name["pseudo_masks"].arguments(plain).overrides
    assert (
        pseudo_overrides.count("refine=none") == 1 and "refine.background_threshold=0.3" in pseudo_overrides
    )
    classifier = by_name["classifier"].arguments(plain)
    assert not any("refine" in o for o in classifier.overrides)  # the pipeline's own key
    walk_overrides = ["refine=random_walk", "refine.radius=4"]
    assert planned_names(tmp_path, walk_overrides)[3:6] == ["ir_labels", "ir_label_eval", "boundary"]
    walk = make_pipeline(tmp_path, walk_overrides).settings
    ir_dir, boundary_dir = tmp_path / "ir_labels" / "masks", tmp_path / "boundary" / "boundary_maps"
    ir_labels = by_name["ir_labels"].arguments(walk)
    assert "refine=ir_labels" in ir_labels.overrides and ir_labels.values["masks_dir"] == str(ir_dir)
    boundary = by_name["boundary"].arguments(walk).values
    assert boundary["ir_labels_dir"] == str(ir_dir) and boundary["boundary_dir"] == str(boundary_dir)
    pseudo = by_name["pseudo_masks"].arguments(walk)
    refine = [o for o in pseudo.overrides if o.startswith("refine")]
    assert refine == ["refine=random_walk", "refine.radius=4"]
    assert pseudo.values["refine.boundary_dir"] == str(boundary_dir)
    assert by_name["pseudo_masks"].inputs(walk) == ("cams", "boundary")
    assert by_name["pseudo_masks"].recorded(walk) == ()  # IRN's reference background: nothing recorded
    with pytest.raises(InvalidSetting, match=r"^stages\.boundary\.enabled=false: stage pseudo_masks reads"):
        plan_of(tmp_path, [*walk_overrides, "stages.boundary.enabled=false"])


def test_irn_thresholds_follow_the_best_cam_threshold_only_when_asked_and_the_report_says_so(tmp_path):
    walk = ["refine=random_walk"]
    (tmp_path / "cam_eval").mkdir()
    (tmp_path / "cam_eval" / "eval.json").write_text('{"cams": {"best_threshold": 0.42}}')
    by_name = {stage.name: stage for stage in STAGES}
    reference = make_pipeline(tmp_path, walk).settings
    assert irn_thresholds(reference) == {} and pixel_label_settings(reference) == []
    assert (
        by_name["ir_labels"].recorded(reference) == () and by_name["pseudo_masks"].recorded(reference) == ()
    )
    moved = make_pipeline(tmp_path, [*walk, "irn_thresholds=best_cam_threshold"]).settings
    # IRN's 0.30 / 0.05 / 0.25 sit at +0.15 / -0.10 / +0.10 from its best threshold 0.15.
    (ir_record,) = by_name["ir_labels"].recorded(moved)
    assert ir_record.source == "cam_eval"
    assert ir_record.read(moved) == {"refine.foreground_threshold": 0.57, "refine.background_threshold": 0.32}
    (walk_record,) = by_name["pseudo_masks"].recorded(moved)
    assert walk_record.read(moved) == {"refine.background": 0.52}
    assert "cam_eval" in by_name["ir_labels"].inputs(moved) and "cam_eval" in by_name["pseudo_masks"].inputs(
        moved
    )
    (stated,) = pixel_label_settings(moved)
    assert "0.57 / 0.32" in stated and "0.52" in stated and "0.42" in stated
    with pytest.raises(InvalidSetting, match=r"^irn_thresholds='maybe': expected one of"):
        plan_of(tmp_path, [*walk, "irn_thresholds=maybe"])


def test_the_report_counts_settings_chosen_with_pixel_labels(tmp_path):
    classifier = tmp_path / "classifier"
    classifier.mkdir()
    (classifier / "metrics.json").write_text(
        '{"dataset": {"class_names": ["a"]}, "metrics": {"val/cam_mIoU": 50.0}}'
    )
    honest = build_report(classifier, {}, {})
    assert not honest["uses_pixel_labels_for_selection"] and honest["settings_chosen_with_pixel_labels"] == []
    assert "weakly supervised throughout" in format_report(honest)
    stated = "irn_thresholds=best_cam_threshold: ..."
    chosen = build_report(classifier, {}, {}, [stated])
    assert chosen["uses_pixel_labels_for_selection"]
    printed = format_report(chosen)
    assert f"chosen with pixel labels: {stated}" in printed and "weakly supervised throughout" not in printed

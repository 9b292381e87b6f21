"""``rca-pipeline`` end to end on a tiny built-in dataset, and resuming a run that stopped half-way."""

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from rca_lightning.data import VOCSegmentationDataset
from rca_lightning.pipeline import STAGES, Pipeline
from rca_lightning.pipeline.stages import seed_values
from rca_lightning.pseudo.cam_writer import cam_file_is_complete
from rca_lightning.report.figure_grid import LEGEND_LINE_HEIGHT
from rca_lightning.utils.errors import InvalidSetting, MissingInput
from rca_lightning.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR
from tests.pipeline_runs import run_pipeline
from tests.references import reference_miou
from tests.stage_helpers import assert_report_is_consistent
from tests.test_train_end_to_end import all_background_miou


@pytest.mark.slow
def test_pipeline_report_and_segmentation_beats_all_background(tiny_pipeline_run):
    run_dir, cache, result = tiny_pipeline_run.run_dir, tiny_pipeline_run.cache, tiny_pipeline_run
    report = json.loads((run_dir / "report.json").read_text())
    for key in ("cam_miou", "pseudo_label_miou", "seg_miou", "classifier_val_cam_miou", "cam_threshold"):
        assert math.isfinite(report[key]), (key, report[key])
    assert_report_is_consistent(report)
    assert 0 <= report["pseudo_ignored_fraction"] <= 1
    dataset_root = Path(report["dataset"]["root"])
    assert dataset_root.is_relative_to(cache)
    assert report["seg_miou"] > all_background_miou(dataset_root) + 1, report["seg_miou"]

    names = ["background", *report["dataset"]["class_names"]]
    # The images behind each segmentation IoU: the val images whose ground truth holds the class.
    val = VOCSegmentationDataset(dataset_root, report["seg_split"], report["dataset"]["class_names"])
    held = [np.array(Image.open(val.mask_path(image_id))) for image_id in val.image_ids]
    expected = {name: sum(bool((mask == c).any()) for mask in held) for c, name in enumerate(names)}
    assert report["per_class_images"]["seg"] == expected
    for kind in ("cam", "pseudo_label", "seg"):
        assert list(report["per_class_iou"][kind]) == names
    stages = ("classifier", "cams", "cam_eval", "pseudo_masks", "pseudo_mask_eval", "segmentation", "report")
    assert set(report["stage_seconds"]) == set(stages)
    assert all(seconds > 0 for seconds in report["stage_seconds"].values())

    # Every output is under the run folder, each stage in its own.
    for stage in stages[:-1]:
        assert (run_dir / stage / ".hydra" / "config.yaml").is_file(), stage
    assert Path(report["folders"]["segmentation_checkpoint"]).is_relative_to(run_dir)
    # No pixel label chose anything: both trained stages used their last weights, and the table says so.
    assert report["uses_pixel_labels_for_selection"] is False
    for stage in ("classifier", "segmentation"):
        assert report["checkpoints"][stage]["checkpoint_selection"] == "last", stage
    assert (
        Path(report["checkpoints"]["classifier"]["checkpoint"])
        == run_dir / "classifier" / "checkpoints" / "last.ckpt"
    )
    assert report["seeds"] == "cams"  # no attention accumulation: seeds=auto takes the CAMs
    assert "no pixel label chose a checkpoint" in result.stdout
    # The printed table carries the three headline figures.
    for key in ("cam_miou", "pseudo_label_miou", "seg_miou"):
        assert f"{report[key]:.1f}" in result.stdout
    # The figure grid: 4 rows of 5 panels, also logged by the csv logger (as are the per-class IoU).
    grid = np.array(Image.open(run_dir / "figures" / "grid.png"))
    assert grid.shape == (14 + 4 * 162 + LEGEND_LINE_HEIGHT, 5 * 162, 3)  # titles, 4 rows, the legend
    logged = list((run_dir / "csv" / "images" / "report" / "grid").glob("*.png"))
    assert len(logged) == 1 and np.array_equal(np.array(Image.open(logged[0])), grid)
    with open(run_dir / "csv" / "tables" / "report" / "per_class_iou.csv") as file:
        table = list(csv.reader(file))
    stages = ["cam", "pseudo_label", "seg"]
    assert table[0] == ["class", *stages, *(f"images_{s}" for s in stages), *(f"pixels_{s}" for s in stages)]
    assert [row[0] for row in table[1:]] == names
    assert float(table[1][3]) == pytest.approx(report["per_class_iou"]["seg"]["background"])
    # Each scored stage's confusion matrix and per-class IoU bars, drawn from the recorded pixel counts,
    # whose IoU is the report's.
    recorded = {
        "cam": json.loads((run_dir / "cam_eval" / "eval.json").read_text())["cams"]["confusion"],
        "pseudo_label": json.loads((run_dir / "pseudo_mask_eval" / "eval.json").read_text())["pseudo_masks"][
            "confusion"
        ],
        "seg": json.loads((run_dir / "segmentation" / "metrics.json").read_text())["test_confusion"],
    }
    for kind, confusion in recorded.items():
        assert (run_dir / "figures" / f"confusion_{kind}.png").is_file(), kind
        assert (run_dir / "figures" / f"iou_{kind}.png").is_file(), kind
        _, ious = reference_miou(confusion)
        for name, iou in zip(names, ious, strict=True):
            expected = report["per_class_iou"][kind][name]
            assert (expected is None) == math.isnan(iou) and (
                expected is None or abs(100 * iou - expected) < 1e-3
            )


@pytest.mark.slow
def test_pipeline_resumes_stopped_stages_without_recomputing_finished_images(copied_pipeline_run):
    run_dir, cache = copied_pipeline_run.run_dir, copied_pipeline_run.cache
    cams_dir, masks_dir = run_dir / "cams" / "maps", run_dir / "pseudo_masks" / "masks"
    # A run stopped during the CAM stage: some CAM files missing, one left corrupt, no stage summaries
    # from there on (stages write their summary last), a stray temporary file of an atomic write.
    cam_files = sorted(cams_dir.glob("*.npz"))
    missing, corrupt, kept = cam_files[0], cam_files[1], cam_files[2:]
    missing.unlink()
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    (cams_dir / f".{missing.name}.abc.tmp").write_bytes(b"half")
    for summary in ("cams/cams.json", "cam_eval/eval.json", "pseudo_masks/pseudo.json"):
        (run_dir / summary).unlink()
    mask_files = sorted(masks_dir.glob("*.png"))
    mask_files[0].unlink()
    # The classifier stopped after its last checkpoint, before writing its summary.
    (run_dir / "classifier" / "metrics.json").unlink()
    seg_checkpoint = run_dir / "segmentation" / "checkpoints" / "last.ckpt"
    before = {path: path.stat().st_mtime_ns for path in [*kept, *mask_files[1:], seg_checkpoint]}

    result = run_pipeline(run_dir, cache, own_process=True)  # Lightning's console line: the process's stderr

    assert "Restoring states from the checkpoint path at" in result.stderr + result.stdout
    assert (run_dir / "classifier" / "metrics.json").is_file()
    assert cam_file_is_complete(missing) and cam_file_is_complete(corrupt)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in before.items()), "finished work redone"
    assert mask_files[0].is_file()
    assert json.loads((run_dir / "cams" / "cams.json").read_text())["written"] == 2
    report = json.loads((run_dir / "report.json").read_text())
    assert math.isfinite(report["cam_miou"]) and math.isfinite(report["seg_miou"])


@pytest.mark.slow
def test_rca_on_eps_pipeline_runs_with_the_built_in_saliency_and_eps_pseudo_masks(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    # Two classifier epochs and one segmentation epoch: what is checked is the flow, not what is learnt.
    result = run_pipeline(run_dir, cache, "model=rca_eps", epochs=2, segmentation_epochs=1)
    report = json.loads((run_dir / "report.json").read_text())
    assert_report_is_consistent(report)
    for key in ("cam_miou", "pseudo_label_miou", "seg_miou"):
        assert math.isfinite(report[key]), (key, report[key])
    assert (Path(report["dataset"]["root"]) / "SaliencyImages").is_dir()
    # The classifier trained with the saliency loss (both heads) and the contrast.
    with (run_dir / "classifier" / "csv" / "metrics.csv").open() as metrics:
        header = metrics.readline().strip().split(",")
    for term in ("saliency", "coarse_saliency", "contrast"):
        assert f"train/loss_{term}_epoch" in header, term
    # The pseudo-mask stage took EPS's rule from the CAM stage's record: constant background 0.20, no CRF.
    cams_record = json.loads((run_dir / "cams" / "cams.json").read_text())
    assert cams_record["pseudo_mask_settings"] == {"background_threshold": 0.2, "crf": False}
    pseudo_cfg = OmegaConf.load(run_dir / "pseudo_masks" / ".hydra" / "config.yaml")
    assert pseudo_cfg.refine.background_threshold == 0.2 and pseudo_cfg.refine.crf is None
    assert f"{report['pseudo_label_miou']:.1f}" in result.stdout


def make_pipeline(run_dir: Path, overrides: list[str]) -> Pipeline:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides, return_hydra_config=True)
    return Pipeline(cfg, overrides, dict(cfg.hydra.runtime.choices), run_dir)


def composed_stages(
    run_dir: Path, overrides: list[str], names: tuple[str, ...] = ()
) -> dict[str, DictConfig]:
    """Each stage's config as the plan composes it (``names``: those stages, else every declared one)."""
    pipeline = make_pipeline(run_dir, overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        plan = pipeline.plan()
        return {stage.name: plan.compose(stage).config for stage in STAGES}


@pytest.mark.slow
def test_stage_overrides_route_shared_settings_to_every_stage(tmp_path):
    overrides = ["model=cam", "data.root=/voc", "seed=3", "paths.cache_dir=/c", "trainer=cpu"]
    command_line = [*overrides, 'stages.cams.overrides=["scales=[1.0]"]', "report.figure_images=2"]
    settings = make_pipeline(tmp_path, command_line).settings
    by_stage = {stage.name: stage.arguments(settings) for stage in STAGES}
    # The classifier sees the command line as rca-train would, without the pipeline's own keys.
    assert by_stage["classifier"].overrides == overrides
    shared = ["data=synthetic", "data.root=/voc", "paths.cache_dir=/c"]
    for name, arguments in by_stage.items():
        if name != "classifier":
            assert arguments.overrides[:3] == shared, name
        assert not any(
            o.startswith(("model", "stages", "report")) for o in arguments.overrides if name != "classifier"
        )
    assert {"trainer=cpu", "experiment=synthetic"} <= set(by_stage["cams"].overrides)
    assert by_stage["cams"].values["seed"] == 3
    assert by_stage["cams"].values["train_dir"] == str(tmp_path / "classifier")
    assert by_stage["segmentation"].values["pseudo_masks_dir"] == str(tmp_path / "pseudo_masks" / "masks")
    # No classifier experiment: the built-in dataset's recipe, named explicitly.
    assert "seg_experiment=synthetic" in by_stage["segmentation"].overrides
    assert by_stage["segmentation"].values["figure_sample"] == 2
    # Each composes (the shared overrides exist in every stage's config).
    composed = composed_stages(tmp_path, command_line)
    assert composed["cams"].scales == [1.0] and composed["cams"].seed == 3
    assert composed["segmentation"].data.root == "/voc"
    assert composed["segmentation"].paths.output_dir == str(tmp_path / "segmentation")


def test_every_shipped_classifier_experiment_has_a_segmentation_recipe(tmp_path):
    recipes = {path.stem for path in (CONFIG_DIR / "seg_experiment").glob("*.yaml")}
    for experiment in sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")):
        assert make_pipeline(tmp_path, [f"experiment={experiment}"]).settings.seg_recipe in recipes, (
            experiment
        )
    chosen = make_pipeline(tmp_path, ["experiment=voc_rca_eps", "seg_recipe=synthetic"])
    assert chosen.settings.seg_recipe == "synthetic"
    unpaired = make_pipeline(tmp_path, ["experiment=voc_rca_eps", "~seg_recipes.voc_rca_eps"])
    with pytest.raises(InvalidSetting, match=r"^experiment=voc_rca_eps: seg_recipes names no segmentation"):
        STAGES[-1].arguments(unpaired.settings)


def test_stage_overrides_resume_from_last_checkpoint_and_follow_the_experiment(tmp_path):
    settings = make_pipeline(tmp_path, ["experiment=voc_rca_resnet101"]).settings
    segmentation = STAGES[-1]
    assert "seg_experiment=deeplab_v2_voc" in segmentation.arguments(settings).overrides
    assert "ckpt_path" not in STAGES[0].arguments(settings).values
    for stage in (STAGES[0], segmentation):
        last = tmp_path / stage.name / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True)
        last.touch()
        assert stage.arguments(settings).values["ckpt_path"] == str(last)


def test_seeds_auto_follow_the_classifier_attention_accumulation(tmp_path):
    def seeds(*overrides: str) -> dict:
        return seed_values(make_pipeline(tmp_path, list(overrides)).settings)

    # The cams stage reads its seeds from the classifier's record, once the classifier finished.
    (record,) = STAGES[1].recorded(make_pipeline(tmp_path, []).settings)
    assert record.source == "classifier" and {"seeds", "attention_dir", "scales", "flip"} == set(record.keys)
    assert seeds() == {"seeds": "cams"}
    with pytest.raises(InvalidSetting, match="seeds=max: the classifier left no attention accumulation"):
        seeds("seeds=max")
    attention = tmp_path / "classifier" / "attention"
    attention.mkdir(parents=True)
    (attention / "index.json").write_text("{}")
    values = seeds()
    assert values["seeds"] == "attention" and values["attention_dir"] == str(attention)
    assert values["scales"] == [1.0] and values["flip"] is False
    assert seeds("seeds=cams")["seeds"] == "cams"
    assert seeds("seeds=max")["seeds"] == "max"


def test_an_existing_classifier_run_replaces_the_classifier_stage(tmp_path):
    trained = tmp_path / "trained"
    pipeline = make_pipeline(tmp_path / "run", [f"train_dir={trained}"])
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(MissingInput, match=rf"^train_dir={trained}: .*metrics.json not found"):
            pipeline.plan()
        trained.mkdir()
        (trained / "metrics.json").write_text("{}")
        plan = pipeline.plan()
    assert plan.is_done(STAGES[0]) and "classifier" not in [planned.stage.name for planned in plan.to_run]
    assert STAGES[1].arguments(plan.settings).values["train_dir"] == str(trained)


@pytest.mark.parametrize(
    ("experiment", "seg_target", "train_split"),
    [
        ("voc_rca_vgg16", "VOCDataModule", "train_aug"),
        ("voc_rca_resnet101", "VOCDataModule", "train_aug"),
        ("coco_rca_resnet101", "COCODataModule", "train2014"),
        ("voc_rca_eps", "VOCDataModule", "train_aug"),
        ("coco_rca_eps", "COCODataModule", "train2014"),
    ],
)
@pytest.mark.slow
def test_published_experiments_compose_every_stage(tmp_path, experiment, seg_target, train_split):
    composed = composed_stages(tmp_path, [f"experiment={experiment}", "data.root=/real"])
    assert composed["classifier"].data.train_split == train_split
    assert composed["cams"].split == train_split and composed["cams"].scales == [0.5, 1.0, 1.5, 2.0]
    segmentation = composed["segmentation"]
    assert segmentation.data._target_.endswith(f".{seg_target}") and segmentation.data.root == "/real"
    assert segmentation.data.train_split == train_split
    assert segmentation.data.train_masks_dir == str(tmp_path / "pseudo_masks" / "masks")
    # The DeepLab-v2 protocol: ResNet-101, crop 321, SGD with weight decay 5e-4, poly schedule.
    assert segmentation.seg_model.net.backbone.name == "resnet101" and segmentation.crop_size == 321
    assert segmentation.seg_model.optimizer.weight_decay == 5e-4 and segmentation.trainer.max_steps > 0


@pytest.mark.slow
def test_switched_off_stages_leave_the_report_and_a_later_run_adds_them(tiny_pipeline_run, tmp_path):
    cache, run_dir = tiny_pipeline_run.cache, tmp_path / "run"
    shutil.copytree(
        tiny_pipeline_run.run_dir,
        run_dir,
        ignore=shutil.ignore_patterns("segmentation", "cam_eval", "figures", "report.json"),
    )
    off = ["stages.segmentation.enabled=false", "stages.cam_eval.enabled=false"]
    result = run_pipeline(run_dir, cache, *off, segmentation_epochs=1)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["stages"] == ["classifier", "cams", "pseudo_masks", "pseudo_mask_eval"]
    assert report["seg_miou"] is None and report["cam_miou"] is None and report["pseudo_label_miou"] > 0
    assert set(report["per_class_iou"]) == {"pseudo_label"} and "segmentation" not in report["checkpoints"]
    assert not (run_dir / "segmentation").exists() and not (run_dir / "figures" / "grid.png").exists()
    assert (run_dir / "figures" / "iou_pseudo_label.png").is_file()
    assert f"{report['pseudo_label_miou']:.1f}" in result.stdout and "segmentation (" not in result.stdout
    # Switched on again in the same folder: only the missing stages run, and the report has them.
    run_pipeline(run_dir, cache, segmentation_epochs=1)
    report = json.loads((run_dir / "report.json").read_text())
    irn = ("ir_labels", "ir_label_eval", "boundary")  # refine=random_walk only
    assert report["stages"] == [stage.name for stage in STAGES if stage.name not in irn]
    assert report["seg_miou"] > 0 and report["cam_miou"] > 0 and (run_dir / "figures" / "grid.png").is_file()

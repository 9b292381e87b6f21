"""Every key of every shipped config is read: ``_target_`` nodes take exactly their target's arguments (every
option of every group, composed into each console script's config), and a run of every stage reads each
plain key (outside ``_target_`` nodes) of its config, and of every option's composition."""

import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from rca_lightning import pipeline as pipeline_package
from rca_lightning.pipeline.plan import Plan
from rca_lightning.tasks import boundary as boundary_cli
from rca_lightning.tasks import export as export_cli
from rca_lightning.tasks import predict as predict_cli
from rca_lightning.tasks import pseudo as pseudo_cli
from rca_lightning.tasks.stage_settings import swept_value
from rca_lightning.utils.resolvers import register_resolvers
from tests.config_reads import ConfigReads, is_read, plain_keys, unknown_target_keys
from tests.conftest import CONFIG_DIR, TINY_DATA_OVERRIDES, TINY_MODEL_OVERRIDES
from tests.pipeline_runs import TINY_SEGMENTATION

# Console script config -> the values its run needs (mandatory ??? settings).
PRIMARY_CONFIGS = {
    "train": [],
    "cams": ["train_dir=/run/classifier"],
    "eval": ["cams_dir=/run/cams/maps"],
    "pseudo": ["cams_dir=/run/cams/maps"],
    "seg_train": ["pseudo_masks_dir=/run/masks"],
    "pipeline": [],
    "predict": ["run_dir=/run", "inputs=/images", "output_dir=/out"],
    "export": ["run_dir=/run", "output=/out/net.onnx"],
    "boundary": ["ir_labels_dir=/ir"],
}
# Options that need a value of their own to compose.
OPTION_VALUES = {
    ("refine", "saliency"): ["refine.saliency_dir=/saliency"],
    ("refine", "random_walk"): ["refine.boundary_dir=/boundary"],
}
OWN_GROUPS = {"hydra", "hydra/help", "hydra/hydra_help", "hydra/hydra_logging", "hydra/job_logging"}


def group_options(config_name: str, extra: list[str]) -> list[list[str]]:
    """One override list per option of every config group ``config_name`` composes (one option changed at a
    time from the defaults), the defaults first."""
    cfg = compose(config_name, overrides=extra, return_hydra_config=True)
    compositions = [extra]
    for group in cfg.hydra.runtime.choices:
        if group in OWN_GROUPS or group.startswith("hydra/"):
            continue
        folder = CONFIG_DIR / group
        for option in sorted(path.stem for path in folder.glob("*.yaml")):
            compositions.append([*extra, f"{group}={option}", *OPTION_VALUES.get((group, option), [])])
    return compositions


def compositions() -> list[tuple[str, list[str]]]:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return [
            (name, overrides)
            for name, extra in PRIMARY_CONFIGS.items()
            for overrides in group_options(name, extra)
        ]


COMPOSITIONS = compositions()


@pytest.mark.parametrize(("config_name", "overrides"), COMPOSITIONS, ids=lambda v: str(v))
def test_target_nodes_take_exactly_their_targets_arguments(config_name, overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    assert unknown_target_keys(cfg) == []


# One epoch of the segmentation network at the tiny run's size (every key it reads is read in one).
SEGMENTATION = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", *TINY_SEGMENTATION]


@pytest.fixture(scope="module")
def stage_reads(tmp_path_factory) -> dict[str, set[str]]:
    """Config name -> the keys a tiny run of every console script read (the pipeline's stages, then
    rca-predict and rca-export on its run)."""
    base = tmp_path_factory.mktemp("keys")
    run_dir = base / "run"
    roots: dict[str, list] = {}
    original_compose, original_init = Plan.compose, pipeline_package.Pipeline.__init__

    def compose_stage(self, stage):
        planned = original_compose(self, stage)
        roots.setdefault(stage.config_name, []).append(planned.config)
        return planned

    def init(self, cfg, *args, **kwargs):
        roots.setdefault("pipeline", []).append(cfg)
        original_init(self, cfg, *args, **kwargs)

    Plan.compose, pipeline_package.Pipeline.__init__ = compose_stage, init
    try:
        with ConfigReads() as reads:
            pipeline_package.run_pipeline(
                [
                    *TINY_DATA_OVERRIDES,
                    *TINY_MODEL_OVERRIDES,
                    "trainer=cpu",
                    "trainer.max_epochs=2",
                    "trainer.enable_progress_bar=false",
                    f"paths.cache_dir={base / 'cache'}",
                    'stages.cams.overrides=["scales=[1.0]"]',
                    'stages.cam_eval.overrides=["progress=false"]',
                    'stages.pseudo_masks.overrides=["progress=false","num_workers=0"]',
                    'stages.pseudo_mask_eval.overrides=["progress=false"]',
                    f"stages.segmentation.overrides={json.dumps(SEGMENTATION, separators=(',', ':'))}",
                ],
                run_dir=run_dir,
            )
            images = sorted(
                Path(OmegaConf.load(run_dir / "cams" / "maps" / "settings.json")["dataset"]["root"]).glob(
                    "JPEGImages/*.jpg"
                )
            )[:2]
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                predict_cfg = compose(
                    "predict",
                    overrides=[
                        f"run_dir={run_dir}",
                        f"inputs=[{','.join(map(str, images))}]",
                        f"output_dir={base / 'predicted'}",
                        "progress=false",
                    ],
                )
                export_cfg = compose(
                    "export",
                    overrides=[
                        f"run_dir={run_dir}",
                        "format=torchscript",
                        f"output={base / 'net.pt'}",
                    ],
                )
                # IRN's stages on the pipeline's CAMs: relation labels, then the boundary network.
                ir_cfg = compose(
                    "pseudo",
                    overrides=[
                        f"cams_dir={run_dir / 'cams' / 'maps'}",
                        "refine=ir_labels",
                        "num_workers=0",
                        "progress=false",
                        f"paths.output_dir={base / 'ir'}",
                    ],
                )
                boundary_cfg = compose(
                    "boundary",
                    overrides=[
                        *TINY_DATA_OVERRIDES,
                        f"ir_labels_dir={base / 'ir' / 'pseudo_masks'}",
                        "trainer=cpu",
                        "trainer.max_epochs=1",
                        "trainer.enable_progress_bar=false",
                        "boundary_model.net.level_channels=8",
                        "boundary_model.net.groups=2",
                        f"paths.cache_dir={base / 'cache'}",
                        f"paths.output_dir={base / 'boundary'}",
                    ],
                )
            predict_cli.predict(predict_cfg)
            export_cli.export(export_cfg)
            pseudo_cli.pseudo(ir_cfg)
            boundary_cli.boundary(boundary_cfg)
            roots["pseudo"].append(ir_cfg)
            roots["boundary"] = [boundary_cfg]
            # What each console script's hydra_main returns to a sweeper.
            report = json.loads((run_dir / "report.json").read_text())
            swept_value(roots["pipeline"][0], report, multirun=False)
            for config_name, stage in (("train", "classifier"), ("seg_train", "segmentation")):
                metrics = json.loads((run_dir / stage / "metrics.json").read_text())["metrics"]
                swept_value(roots[config_name][0], metrics, multirun=False)
            roots["predict"], roots["export"] = [predict_cfg], [export_cfg]
    finally:
        Plan.compose, pipeline_package.Pipeline.__init__ = original_compose, original_init
    by_config = {name: set().union(*(reads.of(cfg) for cfg in cfgs)) for name, cfgs in roots.items()}
    # The pipeline hands the classifier's settings to rca-train: read there.
    by_config["pipeline"] |= by_config["train"]
    return by_config


@pytest.mark.slow
@pytest.mark.parametrize(("config_name", "overrides"), COMPOSITIONS, ids=lambda v: str(v))
def test_every_plain_key_is_read_by_a_run(stage_reads, config_name, overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    # Hydra reads what its own settings interpolate (the run folder: paths.log_dir, task_name).
    read_by_hydra = set(re.findall(r"\$\{([\w.]+)\}", OmegaConf.to_yaml(cfg.hydra)))
    with open_dict(cfg):
        del cfg["hydra"]
    reads = stage_reads[config_name] | read_by_hydra
    unread = [key for key in plain_keys(cfg) if not is_read(key, reads)]
    assert unread == []

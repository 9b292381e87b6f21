"""Helpers of the CAM / pseudo-mask / evaluation stage tests: a tiny "training run" and stage configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from rca_lightning.data import SyntheticVOCGenerator, VOCSegmentationDataset
from rca_lightning.inference.trained_runs import load_classifier, resolve_training_run
from rca_lightning.pseudo.cam_writer import cam_path, save_cam_file
from rca_lightning.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR, TINY_MODEL_OVERRIDES
from tests.console_runs import OFFLINE, run_in_process

# 12 train / 4 val images of 64 px, 3 classes: seconds to generate and to run.
TINY_STAGE_DATA = [
    "data.generator.num_train=12",
    "data.generator.num_val=4",
    "data.generator.image_size=64",
    "data.num_workers=0",
    "data.class_names=[disc,square,triangle]",
]


def compose_config(config_name: str, output_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose a packaged primary config with its outputs under ``output_dir``."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if "trainer" in cfg:
            cfg.trainer.enable_progress_bar = False
            cfg.trainer.enable_model_summary = False
    return cfg


def make_training_run(run_dir: Path, cache_dir: Path) -> DictConfig:
    """An untrained tiny RCA classifier saved like an ``rca-train`` run (checkpoint, metrics.json, .hydra)."""
    cfg = compose_config(
        "train",
        run_dir,
        [*TINY_STAGE_DATA, *TINY_MODEL_OVERRIDES, "trainer=cpu", f"paths.cache_dir={cache_dir}"],
    )
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    model = instantiate(cfg.model)
    # Valid random prototypes, so the aggregation path (forward with the bank) takes part.
    model.memory_bank.prototypes.normal_()
    model.memory_bank.prototype_valid.fill_(True)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": {"class_names": list(cfg.data.class_names)}},
        checkpoint,
    )
    summary = {
        "checkpoint": str(checkpoint),
        "checkpoint_selection": "last",
        "dataset": {"root": str(datamodule.root), "class_names": list(cfg.data.class_names)},
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary))
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return cfg


def load_trained_model(run_dir: Path) -> torch.nn.Module:
    """The classifier of a run made by :func:`make_training_run`, in eval mode (the project's loader)."""
    run = resolve_training_run(run_dir, None, None)
    return load_classifier(run.model_cfg, run.checkpoint, run.dataset["class_names"]).eval()


def make_dataset_with_cams(
    root: Path, cams_dir: Path, num_images: int = 12, image_size: int = 64
) -> VOCSegmentationDataset:
    """A synthetic train split plus CAM files made from its masks (blurred one-hot of the tagged classes)
    and the ``settings.json`` rca-cams would write."""
    class_names = ["disc", "square", "triangle"]
    generator = SyntheticVOCGenerator(
        class_names, num_train=num_images, num_val=2, image_size=image_size, seed=1
    )
    generator.generate(root)
    dataset = VOCSegmentationDataset(root, "train", class_names)
    for image_id, labels in zip(dataset.image_ids, dataset.labels, strict=True):
        mask = np.array(Image.open(dataset.mask_path(image_id)))
        classes = np.flatnonzero(labels)
        blurred = [cv2.GaussianBlur((mask == c + 1).astype(np.float32), (9, 9), 3) for c in classes]
        cams = np.stack(blurred) if blurred else np.zeros((0, *mask.shape), np.float32)
        cams /= np.maximum(cams.reshape(len(classes), -1).max(-1), 1e-5)[:, None, None]
        save_cam_file(cam_path(cams_dir, image_id), classes, cams)
    settings = {
        "stage": "rca-cams",
        "split": "train",
        "dataset": {"root": str(root), "class_names": class_names},
    }
    (cams_dir / "settings.json").write_text(json.dumps(settings))
    return dataset


def run_tiny_pipeline(data: str, root: Path, run_dir: Path, *overrides: str) -> dict:
    """``rca-pipeline data=<data> data.root=<root>`` as a subprocess, every stage shrunk to seconds;
    returns the report."""
    command = [
        str(Path(sys.executable).with_name("rca-pipeline")),
        f"data={data}",
        f"data.root={root}",
        "data.image_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        *TINY_MODEL_OVERRIDES,
        "trainer=cpu",
        "debug=fast",
        "trainer.enable_progress_bar=false",
        'stages.cams.overrides=["scales=[1.0]"]',
        'stages.cam_eval.overrides=["progress=false"]',
        'stages.pseudo_masks.overrides=["progress=false","num_workers=0"]',
        'stages.pseudo_mask_eval.overrides=["progress=false"]',
        'stages.segmentation.overrides=["trainer.max_epochs=1","trainer.enable_progress_bar=false"]',
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    env = {**os.environ, **OFFLINE}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((run_dir / "report.json").read_text())


def assert_report_is_consistent(report: dict) -> None:
    """A pipeline report's figures are percentages, and each headline is the mean of its per-class IoUs.

    The CAM and pseudo-mask headlines average the classes the split shows (``None`` = absent); the
    segmentation headline lies within its classes' range (its metric's own treatment of absent classes).
    """
    headlines = {"cam": "cam_miou", "pseudo_label": "pseudo_label_miou", "seg": "seg_miou"}
    names = ["background", *report["dataset"]["class_names"]]
    for stage, key in headlines.items():
        per_class = report["per_class_iou"][stage]
        assert list(per_class) == names, stage
        present = [value for value in per_class.values() if value is not None]
        assert present and all(0.0 <= value <= 100.0 for value in present), (stage, per_class)
        if stage == "seg":
            assert min(present) - 1e-4 <= report[key] <= max(present) + 1e-4, (report[key], present)
        else:
            assert abs(report[key] - sum(present) / len(present)) < 1e-4, (stage, report[key], present)
    assert report["uses_pixel_labels_for_selection"] is False


def train_segmentation_run(
    root: Path,
    class_names: list[str],
    run_dir: Path,
    epochs: int = 2,
    *overrides: str,
    in_process: bool = False,
) -> dict:
    """``rca-seg`` as a user runs it, on the ground truth of a synthetic dataset as 'pseudo' masks, with
    multi-scale + flip evaluation; returns its ``metrics.json`` (``test/seg_mIoU``: the evaluation path).
    ``in_process``: the installed script run in this process (``tests/console_runs.py``)."""
    command = [
        str(Path(sys.executable).with_name("rca-seg")),
        f"data.root={root}",
        f"data.class_names=[{','.join(class_names)}]",
        "data.generator=null",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.val_batch_size=8",
        f"pseudo_masks_dir={root / 'SegmentationClass'}",
        "crop_size=64",
        "seg_model.net.dilations=[2,4,6,8]",  # rates that fit an 8x8 feature map
        "seg_model.tta_scales=[0.75,1.0]",
        "seg_model.tta_flip=true",
        "trainer=cpu",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    if in_process:
        result = run_in_process("rca-seg", *command[1:], cwd=run_dir.parent)
    else:
        # Tiny convolutions: one thread is as fast and never oversubscribes the CPU.
        env = {**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=600, cwd=run_dir.parent
        )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())


def make_segmentation_run(run_dir: Path, root: Path, class_names: list[str], *overrides: str) -> DictConfig:
    """An untrained tiny segmentation network saved like an ``rca-seg`` run (checkpoint, metrics.json,
    .hydra): what the export and loading tests need without the minutes of training."""
    cfg = compose_config(
        "seg_train",
        run_dir,
        [
            f"data.root={root}",
            f"data.class_names=[{','.join(class_names)}]",
            "data.generator=null",
            f"pseudo_masks_dir={root / 'SegmentationClass'}",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    model = instantiate(cfg.seg_model)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, checkpoint)
    summary = {
        "checkpoint": str(checkpoint),
        "checkpoint_selection": "last",
        "dataset": {"root": str(root), "class_names": list(class_names)},
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary))
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return cfg

"""IRN's boundary network and ``rca-boundary``: the frozen backbone, training from relation labels, the maps
it writes (resumed image by image), and the random-walk refiner that reads them."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image

from rca_lightning.imaging.image_arrays import read_rgb_file
from rca_lightning.lit import BoundaryLitModule
from rca_lightning.models import BoundaryNet, TimmBackbone, TimmMultiLevelBackbone
from rca_lightning.pseudo.boundary_maps import boundary_map_path, read_boundary_map, save_boundary_map
from rca_lightning.pseudo.random_walk import random_walk_mask
from rca_lightning.pseudo.refiners import RandomWalkRefiner
from rca_lightning.tasks.boundary import boundary
from rca_lightning.utils.errors import InvalidData, MissingInput
from rca_lightning.utils.pixel_paths import stride4_size
from tests.stage_helpers import TINY_STAGE_DATA, compose_config


def tiny_net() -> BoundaryNet:
    return BoundaryNet(TimmMultiLevelBackbone("resnet18", output_stride=16), level_channels=8, groups=2)


def test_boundary_map_at_stride_4_with_the_backbone_frozen():
    net = tiny_net().train()
    logits = net(torch.randn(2, 3, 50, 37))
    assert logits.shape == (2, 13, 10)  # ceil(50 / 4), ceil(37 / 4)
    assert not net.backbone.training and all(not p.requires_grad for p in net.backbone.parameters())
    logits.sum().backward()
    assert net.head.weight.grad is not None and all(p.grad is None for p in net.backbone.parameters())
    assert len(net.levels) == len(net.backbone.level_channels) == 5


def test_image_scale_resizes_images_before_the_network_in_training_and_prediction():
    module = BoundaryLitModule(tiny_net(), torch.optim.SGD, image_scale=2.0)
    images = torch.randn(1, 3, 30, 22)
    assert module.boundary_probabilities(images).shape == (1, 15, 11)  # stride 4 of 60 x 44
    labels = torch.zeros(1, 30, 22, dtype=torch.long)
    labels[:, 10:20, 5:15] = 1
    loss = module.training_step({"image": images, "mask": labels}, 0)
    assert torch.isfinite(loss)


def fake_classifier_run(folder: Path) -> dict:
    """An rca-train run folder (metrics.json, .hydra/config.yaml, a checkpoint) whose classifier has a
    resnet18 backbone with recognisable weights; returns the backbone's state dict."""
    torch.manual_seed(0)
    backbone = TimmBackbone("resnet18", output_stride=8)
    state = {f"net.backbone.{key}": value for key, value in backbone.state_dict().items()}
    state["net.head.weight"] = torch.ones(3, 512)  # not the backbone's: not read
    (folder / "checkpoints").mkdir(parents=True)
    checkpoint = folder / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": state}, checkpoint)
    (folder / "metrics.json").write_text(f'{{"checkpoint": "{checkpoint}", "checkpoint_selection": "last"}}')
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(
        "model:\n  net:\n    backbone:\n      _target_: rca_lightning.models.TimmBackbone\n"
        "      name: resnet18\n      output_stride: 8\n"
    )
    return backbone.encoder.state_dict()


def write_relation_labels(root: Path, folder: Path) -> None:
    """Relation labels from the ground truth: objects' classes, background, a ring of 255 around objects."""
    folder.mkdir(parents=True)
    for path in sorted((root / "SegmentationClass").glob("train_*.png")):
        truth = np.array(Image.open(path))
        labels = truth.copy()
        labels[(truth == 0) & (np.roll(truth, 2, 0) > 0)] = 255
        Image.fromarray(labels).save(folder / path.name)


@pytest.mark.slow
def test_rca_boundary_trains_writes_maps_and_resumes(tmp_path, cache_dir):
    overrides = [*TINY_STAGE_DATA, "trainer=cpu", "trainer.max_epochs=2", f"paths.cache_dir={cache_dir}"]
    overrides += ["data.batch_size=4", "boundary_model.net.level_channels=8", "boundary_model.net.groups=2"]
    first = compose_config("boundary", tmp_path / "run", [*overrides, "ir_labels_dir=/nowhere"])
    with pytest.raises(MissingInput, match=r"^ir_labels_dir=/nowhere not found"):
        boundary(first)
    root = Path(first.data.root)
    instantiate(first.data.generator).generate(root)
    write_relation_labels(root, tmp_path / "ir")
    # The frozen backbone from a classifier's run folder, at image_scale 1.5 (maps at stride 4 of 96 px).
    trained = fake_classifier_run(tmp_path / "classifier")
    overrides += [f"classifier_dir={tmp_path / 'classifier'}", "boundary_model.image_scale=1.5"]
    cfg = compose_config("boundary", tmp_path / "run", [*overrides, f"ir_labels_dir={tmp_path / 'ir'}"])
    summary, objects = boundary(cfg)
    assert summary["written"] == summary["total"] == 12
    encoder = objects["model"].net.backbone.encoder.state_dict()
    assert trained.keys() == encoder.keys()
    assert all(torch.equal(trained[key], encoder[key]) for key in trained)
    assert summary["image_scale"] == 1.5 and summary["backbone"]["output_stride"] == 8
    checkpoint = tmp_path / "classifier" / "checkpoints" / "last.ckpt"
    assert summary["backbone"]["checkpoint_path"] == str(checkpoint)
    losses = {key: value for key, value in summary["metrics"].items() if key.startswith("train/loss")}
    assert set(losses) >= {
        "train/loss",
        "train/loss_bg_positive",
        "train/loss_fg_positive",
        "train/loss_negative",
    }
    dataset = objects["datamodule"].make_dataset("train")
    maps = Path(cfg.boundary_dir)
    for image_id in dataset.image_ids:
        image = read_rgb_file(dataset.image_path(image_id))
        boundary_map = read_boundary_map(maps, image_id, stride4_size((96, 96)))
        assert image.shape[:2] == (64, 64)
        assert boundary_map.dtype == np.float32 and (0 <= boundary_map).all() and (boundary_map <= 1).all()
    # Rerun in the same folder, as the pipeline resumes: training resumes from last.ckpt (nothing left
    # to fit), the maps already written stay, the missing one is written.
    kept = boundary_map_path(maps, dataset.image_ids[0]).stat().st_mtime_ns
    boundary_map_path(maps, dataset.image_ids[1]).unlink()
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    again = compose_config(
        "boundary", tmp_path / "run", [*overrides, f"ir_labels_dir={tmp_path / 'ir'}", f"ckpt_path={last}"]
    )
    assert boundary(again)[0]["written"] == 1
    assert boundary_map_path(maps, dataset.image_ids[0]).stat().st_mtime_ns == kept


def test_random_walk_refiner_is_the_walk_of_the_area_averaged_seeds(tmp_path):
    generator = np.random.default_rng(0)
    image = generator.integers(0, 256, (30, 22, 3), dtype=np.uint8)
    seeds = generator.uniform(0, 1, (2, 30, 22)).astype(np.float32)
    boundary_map = generator.uniform(0, 0.5, stride4_size((30, 22)))
    save_boundary_map(boundary_map_path(tmp_path, "a"), boundary_map)
    refiner = RandomWalkRefiner(tmp_path, device="cpu", exp_times=3)
    mask = refiner(image, seeds, np.array([0, 4]), "a")
    strided = F.adaptive_avg_pool2d(torch.from_numpy(seeds)[None], stride4_size((30, 22)))[0]
    stored = torch.from_numpy(boundary_map.astype(np.float16).astype(np.float32))
    expected = random_walk_mask(strided, stored, np.array([0, 4]), (30, 22), exp_times=3)
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(MissingInput, match=r"boundary map .*b\.npy not found"):
        refiner(image, seeds, np.array([0, 4]), "b")
    save_boundary_map(boundary_map_path(tmp_path, "c"), np.zeros((3, 3)))
    with pytest.raises(InvalidData, match=r"c\.npy: shape \(3, 3\), expected \(8, 6\)"):
        refiner(image, seeds, np.array([0, 4]), "c")
    with pytest.raises(MissingInput, match=r"^refine\.boundary_dir=.*nowhere not found"):
        RandomWalkRefiner(tmp_path / "nowhere")


def test_random_walk_refiner_walks_at_the_image_scale_the_folder_records(tmp_path):
    generator = np.random.default_rng(1)
    image = generator.integers(0, 256, (30, 22, 3), dtype=np.uint8)
    seeds = generator.uniform(0, 1, (2, 30, 22)).astype(np.float32)
    boundary_map = generator.uniform(0, 0.5, stride4_size((60, 44)))  # image_scale 2
    save_boundary_map(boundary_map_path(tmp_path, "a"), boundary_map)
    (tmp_path / "settings.json").write_text('{"stage": "rca-boundary", "image_scale": 2.0}')
    mask = RandomWalkRefiner(tmp_path, device="cpu", exp_times=3)(image, seeds, np.array([0, 4]), "a")
    assert mask.shape == (30, 22)
    strided = F.adaptive_avg_pool2d(torch.from_numpy(seeds)[None], (15, 11))[0]
    stored = torch.from_numpy(boundary_map.astype(np.float16).astype(np.float32))
    expected = random_walk_mask(strided, stored, np.array([0, 4]), (30, 22), exp_times=3, walk_size=(60, 44))
    np.testing.assert_array_equal(mask, expected)

"""IRN's boundary network and ``rca-boundary``: the frozen backbone, training from relation labels, the maps
it writes (resumed image by image), and the random-walk refiner that reads them."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image

from rca_lightning.cli.boundary import boundary
from rca_lightning.inference.image_arrays import read_rgb_file
from rca_lightning.models import BoundaryNet, TimmMultiLevelBackbone
from rca_lightning.pseudo.boundary_maps import boundary_map_path, read_boundary_map, save_boundary_map
from rca_lightning.pseudo.random_walk import random_walk_mask, stride4_size
from rca_lightning.pseudo.refiners import RandomWalkRefiner
from rca_lightning.utils.errors import InvalidData, MissingInput
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
    cfg = compose_config("boundary", tmp_path / "run", [*overrides, f"ir_labels_dir={tmp_path / 'ir'}"])
    summary, objects = boundary(cfg)
    assert summary["written"] == summary["total"] == 12
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
        boundary_map = read_boundary_map(maps, image_id, stride4_size(image.shape[:2]))
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

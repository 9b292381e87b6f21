"""The built-in dataset's saliency maps: imperfect by design, measured, and drawn apart from the images."""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rca_lightning.data import SyntheticVOCGenerator, VOCDataModule
from rca_lightning.data.synthetic import COMPLETE_MARKER
from rca_lightning.data.synthetic_saliency import SALIENCY_FOLDER

CLASSES = ("disc", "square", "triangle", "ring", "star", "cross")  # the built-in configuration's
SETTINGS = dict(class_names=CLASSES, num_train=24, num_val=8, image_size=64, seed=0)
# Digest of the decoded masks and the XML of SETTINGS' dataset as the generator wrote it before saliency maps
# existed (published results depend on these files; the saliency step must not change a byte of them).
RENDERED_DIGEST = "4bc114afaa8f55c1abf5757d5e8014c087e901e97fd6a23113f7df88ea08b59c"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_saliency") / "VOC2012"
    SyntheticVOCGenerator(**SETTINGS).generate(root)
    return root


def image_ids(root: Path) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / "trainval.txt").read_text().split()


def rendered_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for image_id in image_ids(root):
        for folder in ("SegmentationClass", "SegmentationObject"):
            digest.update(np.array(Image.open(root / folder / f"{image_id}.png")).tobytes())
        digest.update((root / "Annotations" / f"{image_id}.xml").read_bytes())
    return digest.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file the generator wrote (not the validation cache)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] != ".validation"
    }


def reference_iou(root: Path) -> float:
    """IoU of the maps binarised at 0.5 with the class masks' foreground, border band (255) left out."""
    intersection = union = 0
    for image_id in image_ids(root):
        mask = np.array(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
        saliency = np.array(Image.open(root / SALIENCY_FOLDER / f"{image_id}.png")) / 255.0
        scored = mask != 255
        foreground, salient = (mask > 0) & scored, (saliency > 0.5) & scored
        intersection += int((foreground & salient).sum())
        union += int((foreground | salient).sum())
    return intersection / union


def test_maps_are_grey_pngs_of_the_image_size_for_every_image(generated):
    for image_id in image_ids(generated):
        with Image.open(generated / SALIENCY_FOLDER / f"{image_id}.png") as png:
            assert png.mode == "L" and png.size == (64, 64)


def test_iou_with_the_true_foreground_is_about_0_7_and_recorded(generated):
    iou = reference_iou(generated)
    assert 0.6 <= iou <= 0.8
    record = json.loads((generated / COMPLETE_MARKER).read_text())["saliency"]
    assert record["folder"] == SALIENCY_FOLDER and record["foreground_iou"] == pytest.approx(iou, abs=1e-4)


def test_maps_are_imperfect_in_the_ways_detectors_are(generated):
    """Some objects are missed, some background is salient, and edges are soft (values between 0 and 1)."""
    missed_objects = salient_background = soft_pixels = 0
    for image_id in image_ids(generated):
        objects = np.array(Image.open(generated / "SegmentationObject" / f"{image_id}.png"))
        saliency = np.array(Image.open(generated / SALIENCY_FOLDER / f"{image_id}.png")) / 255.0
        for instance in set(np.unique(objects).tolist()) - {0, 255}:
            missed_objects += int((saliency[objects == instance] > 0.5).mean() < 0.05)
        salient_background += int((saliency[objects == 0] > 0.5).sum())
        soft_pixels += int(((saliency > 0.2) & (saliency < 0.6)).sum())
    assert missed_objects >= 1 and salient_background > 0 and soft_pixels > 0


def test_rendering_is_unchanged_by_the_saliency_step(generated):
    assert rendered_digest(generated) == RENDERED_DIGEST


def test_an_older_dataset_gets_maps_from_its_files_without_rendering_again(generated, tmp_path, monkeypatch):
    """A folder written before maps existed: same files, marker without the saliency record."""
    old = tmp_path / "VOC2012"
    generator = SyntheticVOCGenerator(**SETTINGS)
    for relative, _ in file_hashes(generated).items():
        if not relative.startswith(SALIENCY_FOLDER):
            (old / relative).parent.mkdir(parents=True, exist_ok=True)
            (old / relative).write_bytes((generated / relative).read_bytes())
    (old / COMPLETE_MARKER).write_text(json.dumps(generator.settings(), indent=2) + "\n")
    before = file_hashes(old)
    assert not generator.is_complete(old)

    def no_rendering(*args, **kwargs):
        raise AssertionError("the images were rendered again")

    monkeypatch.setattr(SyntheticVOCGenerator, "render", no_rendering)
    generator.generate(old)
    after = file_hashes(old)
    assert generator.is_complete(old)
    assert {key: after[key] for key in before if key != COMPLETE_MARKER} == {
        key: value for key, value in before.items() if key != COMPLETE_MARKER
    }
    assert after == file_hashes(generated)  # maps and marker as a fresh generation writes them
    assert sorted(path.name for path in tmp_path.iterdir()) == ["VOC2012"]
    assert not [path.name for path in old.iterdir() if path.name.startswith(f".{SALIENCY_FOLDER}")]


def test_deleted_maps_are_written_again(generated, tmp_path):
    root = tmp_path / "VOC2012"
    generator = SyntheticVOCGenerator(**SETTINGS)
    generator.generate(root)
    for path in (root / SALIENCY_FOLDER).iterdir():
        path.unlink()
    (root / SALIENCY_FOLDER).rmdir()
    assert not generator.is_complete(root)
    generator.generate(root)
    assert file_hashes(root) == file_hashes(generated)


def test_the_iou_is_logged_once(tmp_path, caplog):
    generator = SyntheticVOCGenerator(("disc", "ring"), num_train=3, num_val=1, image_size=48)
    with caplog.at_level(logging.INFO, logger="rca_lightning.data.synthetic_saliency"):
        generator.generate(tmp_path / "VOC2012")
    lines = [record.getMessage() for record in caplog.records if "IoU" in record.getMessage()]
    assert len(lines) == 1 and "4 images" in lines[0]


def test_built_in_datamodule_batches_carry_its_maps(generated):
    module = VOCDataModule(
        generated,
        CLASSES,
        image_size=64,
        batch_size=8,
        scale_range=(1.0, 1.0),
        color_jitter=None,
        generator=SyntheticVOCGenerator(**SETTINGS),
        saliency_dir=generated / SALIENCY_FOLDER,
    )
    module.require_saliency()
    module.prepare_data()
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["saliency"].shape == (8, 64, 64) and batch["saliency"].dtype == torch.float32
    for row, image_id in enumerate(batch["image_id"]):
        png = np.array(Image.open(generated / SALIENCY_FOLDER / f"{image_id}.png"))
        expected = torch.from_numpy(png / 255.0)
        if batch["flipped"][row]:
            expected = expected.flip(-1)
        assert torch.allclose(batch["saliency"][row], expected.float(), atol=1e-6)

"""Segmentation stage: SegLitModule (loss, poly lr, dataset-level mIoU, TTA, CRF hook), the pseudo-mask
datamodule and ``rca-seg`` end to end."""

import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from rca_lightning.data import SyntheticVOCGenerator, VOCDataModule, VOCSegmentationDataset
from rca_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rca_lightning.lit.seg_module import SegLitModule
from rca_lightning.utils.errors import InvalidSetting
from tests.references import reference_confusion, reference_miou, reference_tta_logits
from tests.stage_helpers import train_segmentation_run

NUM_CLASSES = 3
CLASSES = ("disc", "square", "triangle")


class ToyNet(nn.Module):
    """A 3x3 conv 'backbone' and a 1x1 classifier; mirror-symmetric kernels make it flip-equivariant."""

    def __init__(self, num_classes: int = NUM_CLASSES, flip_equivariant: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(6, num_classes + 1, 1)
        if flip_equivariant:
            with torch.no_grad():
                self.backbone.weight.copy_((self.backbone.weight + self.backbone.weight.flip(-1)) / 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.backbone(images)))  # (B, C + 1, H, W)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "backbone_weight": [self.backbone.weight],
            "backbone_bias": [self.backbone.bias],
            "new_weight": [self.head.weight],
            "new_bias": [self.head.bias],
        }


def sgd(params, lr: float = 0.1):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


def make_module(net: nn.Module | None = None, **kwargs) -> SegLitModule:
    net = net if net is not None else ToyNet()
    return SegLitModule(net, sgd, num_classes=net.num_classes, **kwargs)


def random_batches(count: int, batch: int = 2, size: int = 8, num_classes: int = NUM_CLASSES) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(count):
        masks = torch.randint(0, num_classes + 1, (batch, size, size), generator=generator)
        masks[torch.rand(batch, size, size, generator=generator) < 0.2] = 255
        images = torch.randn(batch, 3, size, size, generator=generator)
        batches.append({"image": images, "mask": masks, "image_id": [f"im{i}" for i in range(batch)]})
    return DataLoader(batches, batch_size=None)  # already batched


def tiny_trainer(**kwargs) -> L.Trainer:
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**settings, **kwargs})


# -------------------------------------------------------------------------------------------- loss, schedule
def test_loss_ignores_255_and_is_zero_when_everything_is_ignored() -> None:
    module = make_module()
    logits = torch.randn(2, NUM_CLASSES + 1, 5, 5, requires_grad=True)
    masks = torch.randint(0, NUM_CLASSES + 1, (2, 5, 5))
    masks[0, :2] = 255
    expected = F.cross_entropy(logits, masks, ignore_index=255)
    torch.testing.assert_close(module.segmentation_loss(logits, masks), expected)
    empty = module.segmentation_loss(logits, torch.full_like(masks, 255))
    assert empty.item() == 0.0 and empty.requires_grad


def test_poly_schedule_per_step_and_group_multipliers() -> None:
    recorded: list[list[float]] = []

    class RecordLr(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            recorded.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    total_steps, power, base = 6, 0.9, 0.1
    module = make_module(poly_power=power)
    trainer = tiny_trainer(max_steps=total_steps, callbacks=[RecordLr()], limit_val_batches=0)
    trainer.fit(module, train_dataloaders=random_batches(10))
    optimizer = trainer.optimizers[0]
    assert [g["name"] for g in optimizer.param_groups] == [
        "backbone_weight",
        "backbone_bias",
        "new_weight",
        "new_bias",
    ]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0, 5e-4, 0.0]
    multipliers = [1.0, 1.0, 10.0, 20.0]  # the DeepLab-v2 recipe's defaults
    expected = [[base * m * (1 - step / total_steps) ** power for m in multipliers] for step in range(6)]
    assert len(recorded) == total_steps
    np.testing.assert_allclose(recorded, expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------- metrics
def test_validation_miou_is_one_dataset_level_confusion() -> None:
    num_classes = 4  # class 4 is never predicted nor present: left out of the mean
    net = ToyNet(num_classes)
    with torch.no_grad():
        net.head.bias[4] = -1e4
    module = make_module(net, class_names=["a", "b", "c", "d"])
    batches = random_batches(3, num_classes=3)
    tiny_trainer().validate(module, dataloaders=batches)
    metrics = module.trainer.callback_metrics

    net.eval()
    with torch.no_grad():
        predictions = [net(image[None])[0].argmax(0) for batch in batches for image in batch["image"]]
    targets = [mask for batch in batches for mask in batch["mask"]]
    expected_miou, expected_iou = reference_miou(reference_confusion(predictions, targets, 5, 255))
    assert math.isnan(expected_iou[4])
    assert float(metrics["val/seg_mIoU"]) == pytest.approx(100 * expected_miou, abs=1e-4)
    for name, iou in zip(["background", "a", "b", "c"], expected_iou[:4], strict=True):
        assert float(metrics[f"val/IoU_{name}"]) == pytest.approx(100 * iou, abs=1e-4)
    assert "val/IoU_d" not in metrics


# ------------------------------------------------------------------------------------ evaluation path
def test_tta_single_scale_without_flip_is_the_plain_forward() -> None:
    module = make_module().eval()
    images = torch.randn(2, 3, 12, 10)
    torch.testing.assert_close(module.predict_scores(images), module(images), rtol=0, atol=0)


def test_flip_tta_of_a_flip_equivariant_model_equals_the_plain_forward_and_the_reference() -> None:
    module = make_module(ToyNet(flip_equivariant=True), tta_flip=True).eval()
    images = torch.randn(2, 3, 12, 10)
    scores = module.predict_scores(images)
    torch.testing.assert_close(scores, module(images), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        scores, reference_tta_logits(module.net, images, [1.0], True), atol=1e-5, rtol=1e-5
    )


def test_multiscale_flip_tta_matches_the_per_image_reference() -> None:
    scales = [0.5, 1.0, 1.5]
    module = make_module(tta_scales=scales, tta_flip=True).eval()
    images = torch.randn(2, 3, 12, 10)
    scores = module.predict_scores(images)
    torch.testing.assert_close(
        scores, reference_tta_logits(module.net, images, scales, True), atol=1e-5, rtol=1e-5
    )
    assert not torch.allclose(scores, module(images), atol=1e-3)  # the extra views did change something


def test_crf_hook_gets_the_image_and_probabilities_and_its_output_is_used() -> None:
    calls = []

    def crf(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        calls.append((image, probs))
        refined = np.zeros_like(probs)
        refined[2] = 1.0
        return refined

    module = make_module(crf=crf).eval()
    pixels = torch.randint(0, 256, (2, 3, 6, 7), dtype=torch.uint8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    images = (pixels / 255.0 - mean) / std
    scores = module.predict_scores(images)
    assert len(calls) == 2
    for b, (image, probs) in enumerate(calls):
        assert image.dtype == np.uint8 and image.shape == (6, 7, 3)
        np.testing.assert_array_equal(image, pixels[b].permute(1, 2, 0).numpy())
        np.testing.assert_allclose(probs, module(images)[b].softmax(0).detach().numpy(), atol=1e-6)
    assert (scores.argmax(1) == 2).all()


def test_bad_settings_name_themselves() -> None:
    with pytest.raises(InvalidSetting, match=r"num_classes: expected net.num_classes \(3\), got 4"):
        SegLitModule(ToyNet(), sgd, num_classes=4)
    with pytest.raises(
        InvalidSetting, match=r"tta_scales: expected 1 to 16 finite numbers in \(0, 4\], got \[\]"
    ):
        make_module(tta_scales=[])
    with pytest.raises(InvalidSetting, match=r"class_names: expected num_classes \(3\) names, got 1"):
        make_module(class_names=["a"])


# ------------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg") / "VOC2012"
    SyntheticVOCGenerator(CLASSES, num_train=16, num_val=8, image_size=64, seed=0).generate(root)
    return root


def write_constant_masks(folder: Path, image_ids: list[str], value: int, size: int = 64) -> None:
    folder.mkdir(parents=True)
    for image_id in image_ids:
        Image.fromarray(np.full((size, size), value, np.uint8)).save(folder / f"{image_id}.png")


def test_pseudo_masks_train_and_ground_truth_validates(synthetic_root, tmp_path) -> None:
    train_ids = (synthetic_root / "ImageSets/Segmentation/train.txt").read_text().split()
    pseudo = tmp_path / "pseudo"
    write_constant_masks(pseudo, train_ids, value=2)
    # The reader takes an absolute mask folder as is.
    dataset = VOCSegmentationDataset(synthetic_root, "train", CLASSES, mask_dir=pseudo)
    assert (dataset[0]["mask"] == 2).all()

    datamodule = VOCDataModule(
        synthetic_root,
        list(CLASSES),
        train_masks_dir=pseudo,
        eval_resize=False,
        image_size=48,
        batch_size=4,
        val_batch_size=3,
        color_jitter=None,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    train_batch = next(iter(datamodule.train_dataloader()))
    assert train_batch["image"].shape == (4, 3, 48, 48)
    assert set(train_batch["mask"].unique().tolist()) <= {2, 255}  # pseudo labels, padding ignored
    val_batch = next(iter(datamodule.val_dataloader()))
    val_id = val_batch["image_id"][0]
    ground_truth = np.array(Image.open(synthetic_root / "SegmentationClass" / f"{val_id}.png"))
    np.testing.assert_array_equal(val_batch["mask"][0].numpy(), ground_truth)  # original size, exact
    assert val_batch["image"].shape[0] == 3


def test_missing_pseudo_masks_are_named(synthetic_root, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^data\.train_masks_dir=.*nowhere does not exist"):
        VOCDataModule(synthetic_root, list(CLASSES), train_masks_dir=tmp_path / "nowhere").prepare_data()
    train_ids = (synthetic_root / "ImageSets/Segmentation/train.txt").read_text().split()
    write_constant_masks(tmp_path / "partial", train_ids[:3], value=1)
    with pytest.raises(FileNotFoundError, match=f"{len(train_ids) - 3} of {len(train_ids)} masks"):
        VOCDataModule(synthetic_root, list(CLASSES), train_masks_dir=tmp_path / "partial").prepare_data()


# ------------------------------------------------------------------------------------------ end to end
def epoch_means(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get(key)]
    epochs = sorted({int(row["epoch"]) for row in rows})
    return [float(np.mean([float(r[key]) for r in rows if int(r["epoch"]) == e])) for e in epochs]


@pytest.mark.slow
def test_rca_seg_learns_from_pseudo_masks_and_beats_all_background(synthetic_root, tmp_path) -> None:
    run_dir = tmp_path / "run"
    # Ground truth as 'pseudo' masks, multi-scale + flip evaluation, predictions of val written.
    train_segmentation_run(
        synthetic_root, list(CLASSES), run_dir, 10, "save_predictions=true", "trainer.log_every_n_steps=1"
    )

    summary = json.loads((run_dir / "metrics.json").read_text())
    assert Path(summary["checkpoint"]).is_relative_to(run_dir)
    assert (run_dir / "seg.log").exists()
    train_loss = epoch_means(run_dir, "train/loss")
    assert train_loss[-1] < 0.8 * train_loss[0], train_loss

    val_ids = (synthetic_root / "ImageSets/Segmentation/val.txt").read_text().split()
    targets = [
        torch.from_numpy(np.array(Image.open(synthetic_root / f"SegmentationClass/{i}.png"))) for i in val_ids
    ]
    background = [torch.zeros_like(t) for t in targets]
    baseline, _ = reference_miou(reference_confusion(background, targets, NUM_CLASSES + 1, 255))
    val_miou = epoch_means(run_dir, "val/seg_mIoU")
    assert max(val_miou) > 100 * baseline + 10, (val_miou, baseline)
    assert summary["metrics"]["test/seg_mIoU"] > 100 * baseline + 10  # the TTA evaluation of the best epoch

    predictions = sorted((run_dir / "predictions").glob("*.png"))
    assert [p.stem for p in predictions] == sorted(val_ids)
    with Image.open(predictions[0]) as png:
        assert png.mode == "P" and png.size == (64, 64)

"""The figure sample a segmentation run writes for the report: predictions of a few training images through
the evaluation path, read back (and drawn) from files alone; a damaged record is refused in one line."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rca_lightning.imaging.drawing import colourise_mask
from rca_lightning.imaging.palette_png import read_mask_png, write_palette_png
from rca_lightning.pseudo.cam_writer import cam_path, save_cam_file
from rca_lightning.pseudo.pseudo_mask_writer import mask_path
from rca_lightning.report.figure_sample import SAMPLE_RECORD, read_figure_sample, write_figure_sample
from rca_lightning.report.report_figures import grid_rows
from rca_lightning.utils.errors import InvalidData

CLASS_NAMES = ("disc", "square")


class RedIsDisc(nn.Module):
    """A segmentation module whose evaluation path calls a pixel ``disc`` where the image is mostly red."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # where the module lives
        self.hparams = SimpleNamespace(image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))

    def predict_scores(self, images: torch.Tensor) -> torch.Tensor:
        red = images[:, 0]  # (B, H, W) in [0, 1]
        return torch.stack([1 - red, red, torch.zeros_like(red)], dim=1)  # (B, 3, H, W)


def make_split(folder: Path) -> SimpleNamespace:
    """Three images of different sizes, the first two red on their left half, with tags and true masks."""
    folder.mkdir(parents=True)
    ids, sizes = ["a", "b", "c"], [(6, 8), (5, 4), (7, 7)]
    for image_id, (height, width) in zip(ids, sizes, strict=True):
        pixels = np.zeros((height, width, 3), np.uint8)
        if image_id != "c":
            pixels[:, : width // 2, 0] = 255
        Image.fromarray(pixels).save(folder / f"{image_id}.png")
        write_palette_png(folder / f"{image_id}_truth.png", (pixels[..., 0] > 0).astype(np.uint8))
    return SimpleNamespace(
        image_ids=ids,
        labels=np.array([[1, 0], [1, 1], [0, 1]]),
        image_path=lambda image_id: folder / f"{image_id}.png",
        mask_path=lambda image_id: folder / f"{image_id}_truth.png",
        split="train",
        class_names=CLASS_NAMES,
    )


def test_the_sample_holds_the_evaluation_path_predictions_of_images_covering_the_classes(tmp_path):
    split = make_split(tmp_path / "images")
    folder = tmp_path / "seg" / "figure_sample"
    chosen = write_figure_sample(RedIsDisc(), split, 2, folder)
    assert chosen == ["b", "a"]  # the image with both classes first, then the next one adding most
    class_names, sample = read_figure_sample(folder)
    assert class_names == list(CLASS_NAMES) and [item.image_id for item in sample] == chosen
    for item in sample:
        pixels = np.array(Image.open(item.image))
        expected = (pixels[..., 0] / 255.0 > 0.5).astype(np.uint8)  # the argmax of the scores above
        assert np.array_equal(read_mask_png(item.prediction), expected), item.image_id
        assert item.ground_truth == split.mask_path(item.image_id)

    # The grid's rows come from these files alone: image, truth, CAM, pseudo mask, prediction.
    cams_dir, masks_dir = tmp_path / "cams", tmp_path / "masks"
    for item in sample:
        height, width = read_mask_png(item.prediction).shape
        save_cam_file(
            cam_path(cams_dir, item.image_id), np.array([0]), np.ones((1, height, width), np.float32)
        )
        write_palette_png(mask_path(masks_dir, item.image_id), np.zeros((height, width), np.uint8))
    rows, values = grid_rows(sample, cams_dir, masks_dir, CLASS_NAMES, 32)
    assert len(rows) == 2 and all(len(row) == 5 for row in rows)
    assert np.array_equal(rows[0][4], colourise_mask(read_mask_png(sample[0].prediction)))
    assert values == [0, 1]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"class_names": ["a"], "images": [{"id": "../x", "image": "i", "ground_truth": "t"}]},
            "image id '../x'",
        ),
        (
            {"class_names": ["a"], "images": [{"id": "x", "image": 3, "ground_truth": "t"}]},
            "expected id, image",
        ),
        ({"class_names": ["a"], "images": {"id": "x"}}, "images is .*; expected a list"),
        ({"class_names": "a", "images": []}, "class_names is 'a'; expected a list of names"),
        ([], "holds an array"),
    ],
)
def test_a_damaged_sample_record_is_refused_naming_the_file(tmp_path, record, message):
    (tmp_path / SAMPLE_RECORD).write_text(json.dumps(record))
    with pytest.raises(InvalidData, match=rf"^{tmp_path / SAMPLE_RECORD}: .*{message}"):
        read_figure_sample(tmp_path)

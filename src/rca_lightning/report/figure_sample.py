"""The figure sample of a segmentation run: its predictions of a few training images, chosen to cover the
most classes, written by ``rca-seg`` (``figure_sample=N``) so that a report draws its figure from files
alone, without a dataset or a network.

``<run>/figure_sample/<id>.png`` holds each prediction (palette PNG, the image's size) and
``sample.json`` the split, the class names and, per image, its id and the image and ground-truth files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rca_lightning.data.image_ids import unsafe_name_reason
from rca_lightning.imaging.image_arrays import normalise_images, read_rgb_file
from rca_lightning.imaging.palette_png import write_palette_png
from rca_lightning.report.figure_selection import pick_figure_images
from rca_lightning.utils.atomic import path_inside, write_json_atomically
from rca_lightning.utils.errors import InvalidData
from rca_lightning.utils.state_files import read_json_object

SAMPLE_FOLDER = "figure_sample"
SAMPLE_RECORD = "sample.json"
_EXPECTED = "the figure sample rca-seg wrote (split, class_names, images)"


@dataclass(frozen=True)
class SampleImage:
    """One image of the sample: its id, image file, ground-truth mask file and the network's prediction."""

    image_id: str
    image: Path
    ground_truth: Path
    prediction: Path


@torch.no_grad()
def write_figure_sample(model: torch.nn.Module, dataset: object, count: int, folder: Path) -> list[str]:
    """Predict ``count`` images of ``dataset`` (a split's dataset: ``image_ids``, ``labels``,
    ``image_path``, ``mask_path``, ``split``, ``class_names``) with the segmentation module's evaluation
    path (``predict_scores``: its test-time views and CRF) and write them into ``folder``; returns the ids.
    A handful of images, one at a time, each at its own size."""
    image_ids = pick_figure_images(dataset.image_ids, dataset.labels, count)
    model.eval()
    device = next(model.parameters()).device
    images = []
    for image_id in image_ids:
        pixels = torch.from_numpy(read_rgb_file(dataset.image_path(image_id)))[None].to(device)
        normalised = normalise_images(pixels, model.hparams.image_mean, model.hparams.image_std)
        prediction = model.predict_scores(normalised).argmax(1)[0].to(torch.uint8).cpu().numpy()
        write_palette_png(path_inside(folder, f"{image_id}.png"), prediction)
        images.append(
            {
                "id": image_id,
                "image": str(dataset.image_path(image_id)),
                "ground_truth": str(dataset.mask_path(image_id)),
            }
        )
    record = {"split": dataset.split, "class_names": list(dataset.class_names), "images": images}
    write_json_atomically(folder / SAMPLE_RECORD, record)
    return image_ids


def read_figure_sample(folder: Path) -> tuple[list[str], list[SampleImage]]:
    """The class names and images of the sample in ``folder``, checked (InvalidData naming the file)."""
    path = folder / SAMPLE_RECORD
    record = read_json_object(path, _EXPECTED)
    class_names, images = record.get("class_names"), record.get("images")
    if not isinstance(class_names, list) or not all(isinstance(name, str) for name in class_names):
        raise InvalidData(f"{path}: class_names is {class_names!r}; expected a list of names")
    if not isinstance(images, list):
        raise InvalidData(f"{path}: images is {images!r}; expected a list")
    sample = []
    for entry in images:
        fields = (
            (entry.get("id"), entry.get("image"), entry.get("ground_truth"))
            if isinstance(entry, dict)
            else ()
        )
        if len(fields) != 3 or not all(isinstance(field, str) for field in fields):
            raise InvalidData(
                f"{path}: an image entry is {entry!r}; expected id, image and ground_truth strings"
            )
        image_id, image, ground_truth = fields
        reason = unsafe_name_reason(image_id)
        if reason:
            raise InvalidData(f"{path}: image id {image_id!r} {reason}; expected a plain file name")
        sample.append(
            SampleImage(image_id, Path(image), Path(ground_truth), path_inside(folder, f"{image_id}.png"))
        )
    return class_names, sample

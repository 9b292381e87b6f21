"""A PASCAL-VOC-shaped set at VOC's real sizes, drawn by the built-in renderer: the 20 VOC class names, images
of about 500 x 375, the VOC 2012 + SBD layout that ``data=voc`` reads with ``data.train_split=train_aug``.

Output (``root`` is the VOC2012 folder, ``data.root``)::

    root/JPEGImages/<id>.jpg                 JPEG, sizes drawn per image from VOC_IMAGE_SIZES
    root/Annotations/<id>.xml                VOC XML, one <object> per visible instance (every image)
    root/SegmentationClassAug/<id>.png       train_aug masks, single-channel PNG, 0..20 and 255 borders
    root/SegmentationClass/<id>.png          val masks, palette PNG (VOC colour map)
    root/SegmentationObject/<id>.png         val instance masks, palette PNG
    root/SaliencyImages/<id>.png             train_aug saliency maps (grey PNG, data.saliency_dir)
    root/ImageSets/Segmentation/{train_aug,val}.txt
    root/class_names.txt                     the 20 VOC names
    root/.voc_like_complete.json             settings and summary; written last

Ids have VOC's form ``YYYY_NNNNNN``: ``2011_<index>`` in train_aug, ``2012_<index>`` in val. Each XML lists
exactly the classes of its mask. What the real-size sets share (drawing, JPEGs, saliency, resumable parallel
writing) is :mod:`~rca_lightning.data.synthetic_real_size`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from rca_lightning.data import synthetic_saliency as saliency
from rca_lightning.data.synthetic import annotation_xml, grey_png_bytes, jpeg_bytes
from rca_lightning.data.synthetic_chunked_writer import Chunk
from rca_lightning.data.synthetic_real_size import JPEG_QUALITY, GeneratedDataset, RealSizeGenerator
from rca_lightning.data.voc_classes import VOC_CLASS_NAMES
from rca_lightning.data.voc_layout import CLASS_NAMES_FILE, split_file_path
from rca_lightning.imaging.palette_png import palette_png_bytes

TRAIN_MASKS = "SegmentationClassAug"
# (height, width, share): the commonest VOC 2012 image sizes, landscape 500 x 375 most of all.
VOC_IMAGE_SIZES = ((375, 500, 0.45), (333, 500, 0.15), (500, 375, 0.2), (360, 480, 0.1), (500, 333, 0.1))


class VOCLikeGenerator(RealSizeGenerator):
    """Writes the VOC-shaped set (module docstring); usable as ``data.generator`` of ``VOCDataModule``.

    Args:
        num_train: images in ``train_aug`` (VOC + SBD: 10,582).
        num_val: images in ``val`` (VOC: 1,449).
        seed: every byte written is a function of the settings.
        max_objects: each image shows 1..max_objects objects (VOC averages 2.3).
    """

    name, version, marker_name = "voc_like", 1, ".voc_like_complete.json"
    class_names = VOC_CLASS_NAMES
    train_split, val_split = "train_aug", "val"
    image_sizes = VOC_IMAGE_SIZES
    stream = 2_012

    def __init__(self, num_train: int = 10_582, num_val: int = 1_449, seed: int = 0, max_objects: int = 4):
        super().__init__(num_train, num_val, seed, max_objects)

    def image_id(self, split: str, index: int) -> str:
        """The id of image ``index`` of ``split`` (``2011_000042``)."""
        return f"{2011 if split == self.train_split else 2012}_{index:06d}"

    def prepare(self, folder: Path) -> None:
        """Make the folders the chunks write into."""
        for sub in ("JPEGImages", "Annotations", TRAIN_MASKS, "SegmentationClass", "SegmentationObject"):
            (folder / sub).mkdir(exist_ok=True)
        (folder / saliency.SALIENCY_FOLDER).mkdir(exist_ok=True)
        split_file_path(folder, self.val_split).parent.mkdir(parents=True, exist_ok=True)

    def write_chunk(self, folder: Path, chunk: Chunk) -> list[dict]:
        """Draw and write the chunk's images, masks, XMLs and (train_aug) saliency maps."""
        records = []
        for index in range(chunk.start, chunk.stop):
            image_id = self.image_id(chunk.split, index)
            rendered = self.render_image(chunk.split, index)
            (folder / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg_bytes(rendered.image, JPEG_QUALITY))
            xml = annotation_xml(image_id, rendered, VOC_CLASS_NAMES)
            (folder / "Annotations" / f"{image_id}.xml").write_bytes(xml)
            overlap = None
            if chunk.split == self.train_split:
                # single-channel masks, as SBD's usual conversion writes them
                (folder / TRAIN_MASKS / f"{image_id}.png").write_bytes(grey_png_bytes(rendered.class_mask))
                png, overlap = saliency.smooth_saliency_png(rendered.object_mask, self.seed, image_id)
                (folder / saliency.SALIENCY_FOLDER / f"{image_id}.png").write_bytes(png)
            else:
                for sub, mask in (
                    ("SegmentationClass", rendered.class_mask),
                    ("SegmentationObject", rendered.object_mask),
                ):
                    (folder / sub / f"{image_id}.png").write_bytes(palette_png_bytes(mask))
            records.append({"id": image_id, "saliency_overlap": overlap})
        return records

    def finish(self, folder: Path, records: dict[str, list[dict]]) -> dict:
        """Write the split lists and class names; the summary: images per split, saliency IoU."""
        for split, split_records in records.items():
            split_file_path(folder, split).write_text(
                "".join(f"{record['id']}\n" for record in split_records)
            )
        (folder / CLASS_NAMES_FILE).write_text("".join(f"{name}\n" for name in VOC_CLASS_NAMES))
        return {
            "images": {split: len(split_records) for split, split_records in records.items()},
            "saliency_foreground_iou": saliency.foreground_iou(
                [record["saliency_overlap"] for record in records[self.train_split]]
            ),
        }


def generate_voc_like(
    root: str | os.PathLike,
    num_train: int = 10_582,
    num_val: int = 1_449,
    seed: int = 0,
    workers: int | None = None,
    max_objects: int = 4,
) -> GeneratedDataset:
    """Write (or find complete) the VOC-shaped set of ``num_train`` train_aug and ``num_val`` val images.

    Args:
        root: the VOC2012 folder to write: missing, empty, or a set this generator wrote.
        workers: processes drawing images (None: every CPU; 0 or 1: this process).

    Returns:
        Its root, splits and saliency folder: ``data=voc data.root=<root> data.train_split=train_aug
        data.saliency_dir=<saliency_dir>`` reads it.
    """
    return VOCLikeGenerator(num_train, num_val, seed, max_objects).generate(root, workers)

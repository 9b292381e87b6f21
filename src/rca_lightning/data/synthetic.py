"""The built-in dataset, written in the exact PASCAL VOC 2012 layout (images drawn by
:mod:`~rca_lightning.data.synthetic_renderer` from the classes of
:mod:`~rca_lightning.data.synthetic_catalogue`).

Output (``root`` is the VOC2012 folder)::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png      palette PNG, 0 background, 1..C classes, 255 borders
    root/SegmentationObject/<id>.png     palette PNG, 1..N instances, 255 borders
    root/SaliencyImages/<id>.png         grey PNG, imperfect saliency map (synthetic_saliency.py)
    root/Annotations/<id>.xml            VOC XML, one <object> per visible instance
    root/ImageSets/Segmentation/{train,val,trainval}.txt
    root/class_names.txt                 one foreground class per line, mask value order
    root/.synthetic_complete.json        the generator settings and the saliency maps' record; written last
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from rca_lightning.data import synthetic_saliency as saliency
from rca_lightning.data.synthetic_renderer import RenderedImage, SyntheticRenderer
from rca_lightning.data.voc_layout import CLASS_NAMES_FILE
from rca_lightning.imaging.palette_png import palette_png_bytes
from rca_lightning.utils.atomic import publish_folder
from rca_lightning.utils.errors import InvalidSetting

GENERATOR_VERSION = 2
COMPLETE_MARKER = ".synthetic_complete.json"
JPEG_QUALITY = 92


class SyntheticVOCGenerator(SyntheticRenderer):
    """Writes a procedurally generated weakly supervised segmentation dataset in VOC 2012 layout.

    The images are drawn by :class:`rca_lightning.data.synthetic_renderer.SyntheticRenderer` (its
    arguments); this class writes them, their masks, annotations, split lists and saliency maps.
    """

    def settings(self) -> dict:
        """The settings recorded in the complete-marker (a different value means a different dataset)."""
        return {
            "generator_version": GENERATOR_VERSION,
            "class_names": list(self.class_names),
            "num_train": self.num_train,
            "num_val": self.num_val,
            "image_size": self.image_size,
            "seed": self.seed,
            "max_objects": self.max_objects,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self.settings().items())
        return f"SyntheticVOCGenerator({fields})"

    # ------------------------------------------------------------------------------ files
    def is_complete(self, root: str | os.PathLike) -> bool:
        """Whether ``root`` holds a finished dataset of exactly these settings, saliency maps included."""
        return saliency.marker_state(Path(root) / COMPLETE_MARKER, self.settings()) == saliency.COMPLETE

    def generate(self, root: str | os.PathLike) -> None:
        """Write the dataset under ``root`` unless it is already complete.

        The files are built in a temporary sibling folder that is renamed to ``root`` at the end,
        so readers never see a half-written dataset. A ``root`` generated earlier with other
        settings is replaced; any other non-empty ``root`` is left alone and raises. A dataset of these
        settings without (current) saliency maps only gets them (``synthetic_saliency.add_saliency_maps``).

        Raises:
            ValueError: ``root`` is a non-empty folder that this generator did not write.
        """
        root = Path(root)
        state = saliency.marker_state(root / COMPLETE_MARKER, self.settings())
        if state is not None:
            if state == saliency.IMAGES_ONLY:
                saliency.add_saliency_maps(root, self.seed, root / COMPLETE_MARKER, self.settings())
            return
        previous_generated = (root / COMPLETE_MARKER).is_file()
        if root.exists() and not previous_generated and (not root.is_dir() or any(root.iterdir())):
            raise InvalidSetting(
                f"data.root={root}: exists and is not a synthetic dataset (no {COMPLETE_MARKER}); "
                "expected an empty or missing folder for the generator"
            )
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            self._write_all(staging)
            # Our own dataset with other settings (or an empty folder) is replaced; another process (e.g.
            # another node's rank zero) may have finished first.
            publish_folder(staging, root, lambda: self.is_complete(root))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_all(self, folder: Path) -> None:
        for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations"):
            (folder / sub).mkdir()
        (folder / "ImageSets" / "Segmentation").mkdir(parents=True)
        split_ids: dict[str, list[str]] = {}
        for split_index, (split, count) in enumerate((("train", self.num_train), ("val", self.num_val))):
            split_ids[split] = []
            for index in range(count):
                image_id = f"{split}_{index:06d}"
                rng = np.random.default_rng([self.seed, split_index, index])
                rendered = self.render(rng)
                self._write_image(folder, image_id, rendered)
                split_ids[split].append(image_id)
        split_ids["trainval"] = split_ids["train"] + split_ids["val"]
        for split, ids in split_ids.items():
            (folder / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
                "".join(f"{i}\n" for i in ids)
            )
        (folder / CLASS_NAMES_FILE).write_text("".join(f"{name}\n" for name in self.class_names))
        saliency_record = saliency.write_saliency_maps(folder, self.seed)  # from the masks just written
        (folder / COMPLETE_MARKER).write_bytes(saliency.marker_bytes(self.settings(), saliency_record))

    def _write_image(self, folder: Path, image_id: str, rendered: RenderedImage) -> None:
        (folder / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg_bytes(rendered.image, JPEG_QUALITY))
        for sub, mask in (
            ("SegmentationClass", rendered.class_mask),
            ("SegmentationObject", rendered.object_mask),
        ):
            (folder / sub / f"{image_id}.png").write_bytes(palette_png_bytes(mask))
        xml = annotation_xml(image_id, rendered, self.class_names)
        (folder / "Annotations" / f"{image_id}.xml").write_bytes(xml)


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """The bytes of a JPEG of an (H, W, 3) uint8 RGB image at ``quality`` (OpenCV's encoder)."""
    ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for an image of shape {image.shape}")
    return jpeg.tobytes()


def grey_png_bytes(values: np.ndarray) -> bytes:
    """The bytes of a single-channel 8-bit PNG of an (H, W) uint8 array (OpenCV's encoder)."""
    ok, png = cv2.imencode(".png", values)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for an array of shape {values.shape}")
    return png.tobytes()


def annotation_xml(image_id: str, rendered: RenderedImage, class_names: Sequence[str]) -> bytes:
    """The VOC XML of a drawn image: its size and one ``<object>`` (name, box, truncated) per instance."""
    height, width = rendered.class_mask.shape
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "VOC2012"
    ET.SubElement(annotation, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(annotation, "source")
    ET.SubElement(source, "database").text = "rca-lightning synthetic VOC"
    size = ET.SubElement(annotation, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(annotation, "segmented").text = "1"
    for class_index, (xmin, ymin, xmax, ymax), truncated in rendered.objects:
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = class_names[class_index]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(truncated))
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(annotation, space="\t")
    return ET.tostring(annotation, encoding="utf-8") + b"\n"

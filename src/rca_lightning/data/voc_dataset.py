"""Reader for the PASCAL VOC 2012 layout (the real dataset and the built-in synthetic one)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rca_lightning.data.saliency import check_saliency_maps, read_saliency, saliency_map_path
from rca_lightning.data.transforms import (
    IDENTITY_CROP_BOX,
    build_eval_transform,
    crop_window,
    follow_geometry,
)
from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.data.voc_layout import read_split_ids, split_file_path
from rca_lightning.imaging.image_arrays import read_rgb_file
from rca_lightning.imaging.palette_png import read_mask_png
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput

Transform = Callable[..., dict]


def read_annotation_objects(xml_path: Path) -> list[tuple[str, bool]]:
    """(class name, difficult) of every ``<object>`` of a VOC XML, in file order.

    Only the direct ``<name>`` of each object counts: VOC person layouts also have ``<part><name>``.
    """
    try:
        objects = ET.parse(xml_path).getroot().findall("object")
    except ET.ParseError as error:
        raise InvalidData(f"{xml_path}: not valid XML ({error}); expected a VOC annotation") from error
    return [
        (obj.findtext("name", "").strip(), obj.findtext("difficult", "0").strip() == "1") for obj in objects
    ]


class VOCSegmentationDataset(Dataset):
    """Images, image-level labels and (for scoring) segmentation masks of one VOC split.

    Image-level labels are parsed once, at construction, from ``Annotations/<id>.xml`` (every
    ``<object>``, difficult ones included); when an image has no XML they come from the classes
    present in its mask. Missing masks read as all 255 (ignored everywhere).

    Args:
        root: the VOC2012 folder (holding JPEGImages, Annotations, SegmentationClass, ImageSets).
        split: name of ``ImageSets/Segmentation/<split>.txt``.
        class_names: foreground classes; mask value of ``class_names[i]`` is ``i + 1``.
        transform: albumentations-style callable ``(image=, mask=) -> dict(image=, mask=)``;
            None normalises with the ImageNet statistics and keeps the size.
        mask_dir: folder of the masks (``SegmentationClassAug`` for VOC train_aug), relative to ``root``,
            or an absolute folder (e.g. pseudo masks written elsewhere).
        saliency_dir: folder of saliency maps ``<id>.png`` (``rca_lightning.data.saliency``), or None to
            read none; every listed image must have one.

    Items are dicts: ``image`` float32 (3, H, W), ``labels`` float32 (C,) multi-hot,
    ``mask`` int64 (H, W) with values 0..C and 255, ``image_id`` str, ``index`` int (the position in
    the dataset), ``crop_box`` float32 (4,) = (x0, y0, x1, y1), the window the image was cut from in
    normalised original-image coordinates (outside [0, 1] where it includes padding), and ``flipped``
    bool (mirrored left-right after the crop). The last two come from the transform's
    ``applied_transforms`` (``build_train_transform``); other transforms give (0, 0, 1, 1) and False.
    With a ``saliency_dir``, items also hold ``saliency`` float32 (H, W) in [0, 1]: the map resized to
    its image, then scaled, padded (with 0), cropped and flipped with it (``follow_geometry``), untouched
    by colour jitter and normalisation; the transform must record ``applied_transforms`` (the built-in
    ones do).
    """

    saliency_dir: Path | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        class_names: Sequence[str],
        transform: Transform | None = None,
        mask_dir: str | os.PathLike = "SegmentationClass",
        saliency_dir: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.class_names = tuple(class_names)
        self.transform = transform if transform is not None else build_eval_transform(None)
        self.mask_dir = mask_dir
        self._class_index = {name: i for i, name in enumerate(self.class_names)}
        if not self.class_names:
            raise InvalidSetting(
                "data.class_names: expected at least one foreground class, got an empty list"
            )
        if not self.root.is_dir():
            raise MissingInput(f"data.root={self.root} not found: expected a VOC2012-style folder")
        split_file = split_file_path(self.root, split)
        if not split_file.is_file():
            available = (
                sorted(p.stem for p in split_file.parent.glob("*.txt")) if split_file.parent.is_dir() else []
            )
            raise MissingInput(f"split file {split_file} not found (split={split!r}; available: {available})")
        self.image_ids: list[str] = read_split_ids(split_file)  # plain file names, whatever the split
        missing = [i for i in self.image_ids if not self.image_path(i).is_file()]
        if missing:
            raise MissingInput(
                f"{len(missing)} of {len(self.image_ids)} images listed in {split_file} are missing, "
                f"first: {self.image_path(missing[0])}"
            )
        self.saliency_dir = None if saliency_dir is None else Path(saliency_dir)
        if self.saliency_dir is not None:
            check_saliency_maps(self.saliency_dir, self.image_ids, split_file)
        self.labels = (
            np.stack([self._read_labels(i) for i in self.image_ids])
            if self.image_ids
            else np.zeros((0, self.num_classes), np.float32)
        )  # (N, C)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C."""
        return len(self.class_names)

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        return self.root / self.mask_dir / f"{image_id}.png"

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "Annotations" / f"{image_id}.xml"

    def saliency_path(self, image_id: str) -> Path | None:
        """The image's saliency map, or None when the dataset reads none."""
        return None if self.saliency_dir is None else saliency_map_path(self.saliency_dir, image_id)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _read_labels(self, image_id: str) -> np.ndarray:
        """(C,) float32 multi-hot labels from the XML, else from the mask."""
        labels = np.zeros(self.num_classes, np.float32)
        xml_path = self.annotation_path(image_id)
        if xml_path.is_file():
            for name, _ in read_annotation_objects(xml_path):
                if name not in self._class_index:
                    raise InvalidData(
                        f"{xml_path}: unknown class {name!r}; known class_names: {list(self.class_names)}"
                    )
                labels[self._class_index[name]] = 1.0
            return labels
        mask_path = self.mask_path(image_id)
        if not mask_path.is_file():
            raise MissingInput(f"no labels for {image_id!r}: neither {xml_path} nor {mask_path} exists")
        present = np.unique(self._read_mask(image_id))
        present = present[(present > 0) & (present != IGNORE_INDEX)]
        labels[present - 1] = 1.0
        return labels

    def _read_image(self, image_id: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return read_rgb_file(self.image_path(image_id))

    def _read_mask(self, image_id: str) -> np.ndarray:
        """(H, W) uint8 class indices (palette PNG or single-channel PNG)."""
        path = self.mask_path(image_id)
        mask = read_mask_png(path)
        invalid = (mask > self.num_classes) & (mask != IGNORE_INDEX)
        if invalid.any():
            raise InvalidData(
                f"{path}: mask value {int(mask[invalid][0])} outside 0..{self.num_classes} and {IGNORE_INDEX}"
            )
        return mask

    def _seed_transform_for_this_item(self) -> None:
        """albumentations draws from its own generator, which neither ``seed_everything`` nor a checkpoint
        reaches: reseed it for every item from torch's generator of this process (the main process's,
        which a resumed run restores, or a DataLoader worker's, seeded from the main one each epoch), so
        augmentations repeat exactly from the seed, and after resuming from a checkpoint."""
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(torch.randint(2**31, ())))

    def __getitem__(self, index: int) -> dict:
        image_id = self.image_ids[index]
        image = self._read_image(image_id)  # (H, W, 3)
        if self.mask_path(image_id).is_file():
            mask = self._read_mask(image_id)  # (H, W)
            if mask.shape != image.shape[:2]:
                raise InvalidData(
                    f"{self.mask_path(image_id)}: mask size {mask.shape} differs from "
                    f"image size {image.shape[:2]}"
                )
        else:
            mask = np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        saliency_path = self.saliency_path(image_id)
        saliency = None if saliency_path is None else read_saliency(saliency_path, image.shape[:2])  # (H, W)
        self._seed_transform_for_this_item()
        out = self.transform(image=image, mask=mask)
        image_tensor, mask_tensor = out["image"], out["mask"]
        applied = out.get("applied_transforms")
        if applied is None:
            crop_box, flipped = np.array(IDENTITY_CROP_BOX, np.float32), False
        else:
            crop_box, flipped = crop_window(applied)
        if isinstance(image_tensor, np.ndarray):  # a transform without ToTensorV2
            image_tensor = torch.from_numpy(np.ascontiguousarray(image_tensor.transpose(2, 0, 1)))
        if isinstance(mask_tensor, np.ndarray):
            mask_tensor = torch.from_numpy(np.ascontiguousarray(mask_tensor))
        item = {
            "image": image_tensor.float(),  # (3, H, W)
            "labels": torch.from_numpy(self.labels[index].copy()),  # (C,)
            "mask": mask_tensor.long(),  # (H, W)
            "image_id": image_id,
            "index": int(index),
            "crop_box": torch.from_numpy(crop_box),  # (4,)
            "flipped": flipped,
        }
        if saliency is not None:
            if applied is None:
                raise ValueError(
                    "a dataset with saliency_dir needs a transform built with save_applied_params=True "
                    "(the saliency map follows the image's recorded geometry)"
                )
            saliency = follow_geometry(applied, saliency, tuple(image_tensor.shape[-2:]), fill=0.0)
            item["saliency"] = torch.from_numpy(np.clip(saliency, 0.0, 1.0))  # (H, W)
        return item

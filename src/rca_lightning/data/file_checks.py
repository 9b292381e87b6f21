"""What makes the files of one image id valid: the image decodes, the mask fits it, the labels agree.

:func:`image_id_problem` reads an image id's files the way training will and says, in one phrase naming the
id and the file, what is wrong with them:

- the image decodes completely with PIL (OpenCV, which the loader uses, fills a truncated JPEG with grey
  and only prints libjpeg's anonymous "Premature end of JPEG file"),
- the mask is a palette or grey PNG that decodes, has the image's size (as OpenCV reads the image: EXIF
  orientation applied) and holds only the values 0..C and 255,
- when an XML annotation is given: every class in the mask has an ``<object>``, and every class with a
  non-difficult ``<object>`` has pixels in the mask (VOC paints difficult objects void, 255);
- when a saliency map is given (a method trained with saliency): it decodes completely as an 8-bit grey or
  colour PNG (any size: the loader resizes it to its image).

A missing mask or XML is not checked (the loader reads a missing mask as all 255, labels without an XML
come from the mask); the layout check names missing files before this runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from rca_lightning.data.saliency import decode_saliency
from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.data.voc_dataset import read_annotation_objects
from rca_lightning.utils.errors import InvalidData

# EXIF orientations that turn the image by 90 degrees when OpenCV reads it (cv2.imread applies them).
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
# What PIL raises for a file it cannot read or decode to the end.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageFiles:
    """The files of one image id that validation reads.

    Attributes:
        image_id: the id as listed in the split.
        image: the image file.
        mask: the mask file (its absence is not checked here).
        annotation: the XML whose labels must agree with the mask, or None where the mask is not ground
            truth (pseudo masks) or the dataset has no XML (COCO).
        saliency: the saliency map, or None where the run reads none.
    """

    image_id: str
    image: Path
    mask: Path
    annotation: Path | None = None
    saliency: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        """The files the check reads (whose path, size and modification time key its cached result)."""
        files = (self.image, self.mask, self.annotation, self.saliency)
        return tuple(path for path in files if path is not None)


@contextlib.contextmanager
def strict_decoding() -> Iterator[None]:
    """PIL raises on truncated images inside the block, whatever another library has set."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _image_size_as_loaded(path: Path) -> tuple[int, int]:
    """(H, W) of an image decoded completely, as OpenCV returns it (EXIF orientation applied)."""
    with Image.open(path) as image:
        image.load()
        width, height = image.size
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)


def _read_mask(path: Path) -> np.ndarray | str:
    """(H, W) uint8 mask values, or what keeps the file from being a mask."""
    try:
        with Image.open(path) as png:
            if png.mode not in ("P", "L"):
                return f"has mode {png.mode!r}; expected a palette (P) or grey (L) PNG"
            return np.array(png, dtype=np.uint8)
    except _DECODE_ERRORS as error:
        return f"does not decode ({_one_line(error)})"


def _label_disagreement(files: ImageFiles, mask: np.ndarray, class_names: Sequence[str]) -> str | None:
    """How the XML's objects and the mask's classes differ, or None when they agree."""
    objects = read_annotation_objects(files.annotation)
    unknown = sorted({name for name, _ in objects} - set(class_names))
    if unknown:
        return f"{files.annotation} names unknown class(es) {unknown}; expected names of data.class_names"
    values = np.unique(mask)
    in_mask = {class_names[value - 1] for value in values.tolist() if 0 < value <= len(class_names)}
    listed = {name for name, _ in objects}
    undifficult = {name for name, difficult in objects if not difficult}
    without_object = sorted(in_mask - listed, key=class_names.index)
    if without_object:
        return (
            f"mask {files.mask} shows {without_object} but {files.annotation} has no <object> of "
            f"{'that class' if len(without_object) == 1 else 'these classes'}"
        )
    without_pixels = sorted(undifficult - in_mask, key=class_names.index)
    if without_pixels:
        return f"{files.annotation} lists <object> {without_pixels} with no pixel in mask {files.mask}"
    return None


def image_id_problem(files: ImageFiles, class_names: Sequence[str]) -> str | None:
    """What is wrong with one image id's files, as ``"<id>: <what, naming the file>"``; None when nothing.

    Args:
        files: the id's image, mask and (optional) XML annotation.
        class_names: foreground classes; mask value ``i + 1`` is ``class_names[i]``.
    """
    with strict_decoding():
        problem = _problem(files, class_names) or _saliency_problem(files)
    return None if problem is None else f"{files.image_id}: {problem}"


def _saliency_problem(files: ImageFiles) -> str | None:
    if files.saliency is None:
        return None
    if not files.saliency.is_file():
        return f"saliency map {files.saliency} is missing"
    try:
        decode_saliency(files.saliency)
    except InvalidData as error:
        return str(error)
    return None


def _problem(files: ImageFiles, class_names: Sequence[str]) -> str | None:
    try:
        image_size = _image_size_as_loaded(files.image)
    except _DECODE_ERRORS as error:
        return f"image {files.image} does not decode completely ({_one_line(error)})"
    if not files.mask.is_file():
        return None
    mask = _read_mask(files.mask)
    if isinstance(mask, str):
        return f"mask {files.mask} {mask}"
    if mask.shape != image_size:
        return f"mask {files.mask} size {mask.shape} differs from image size {image_size}"
    invalid = (mask > len(class_names)) & (mask != IGNORE_INDEX)
    if invalid.any():
        return (
            f"mask {files.mask} holds value {int(mask[invalid][0])}; "
            f"expected 0..{len(class_names)} or {IGNORE_INDEX}"
        )
    if files.annotation is None or not files.annotation.is_file():
        return None
    try:
        return _label_disagreement(files, mask, class_names)
    except InvalidData as error:  # an unparsable XML
        return str(error)


def problems_of(chunk: Sequence[ImageFiles], class_names: Sequence[str]) -> list[str | None]:
    """:func:`image_id_problem` of every entry (a worker process's unit of work)."""
    return [image_id_problem(files, class_names) for files in chunk]


__all__ = ["ImageFiles", "image_id_problem", "problems_of", "strict_decoding"]

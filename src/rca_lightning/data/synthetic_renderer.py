"""Drawing the built-in dataset's images: objects of the catalogue on a textured, cluttered background.

Every image shows 1..``max_objects`` objects of the chosen classes. Each class has its own shape family,
hue range, texture and (for most classes) a small discriminative marking, so a CAM trained with image
tags tends to fire on the marking and the texture before it covers the whole object. Distractors (thin
lines, arcs, blobs with colours taken from the class hue ranges) and background colour fields belong to
no class, so a colour threshold does not solve the task. Later objects occlude earlier ones; masks show
the visible part only, with a 255 band along every object border as in VOC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from rca_lightning.data.synthetic_catalogue import (
    CLASS_CATALOGUE,
    SHAPES,
    SYNTHETIC_CLASS_NAMES,
    TEXTURES,
    ClassStyle,
    regular_polygon,
)
from rca_lightning.data.voc_classes import IGNORE_INDEX
from rca_lightning.utils.errors import InvalidSetting


@dataclass
class RenderedImage:
    """One drawn sample before it is written to files."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    class_mask: np.ndarray  # (H, W) uint8, 0 / 1..C / 255
    object_mask: np.ndarray  # (H, W) uint8, 0 / 1..N / 255
    objects: list[tuple[int, tuple[int, int, int, int], bool]]  # (class index, 1-based box, truncated)
    instance_map: np.ndarray  # (H, W) uint8, 0 / 1..N, no border band (instance i is objects[i - 1])


def _hsv_to_rgb(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    """One HSV colour (degrees, 0..1, 0..1) -> (3,) float32 RGB in 0..255."""
    hsv = np.array([[[(hue_deg % 360.0) / 2.0, saturation * 255.0, value * 255.0]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def border_band(instance_map: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds more than one instance id (a ~2 px band on every border).

    Args:
        instance_map: (H, W) uint8 instance ids, 0 = background.

    Returns:
        (H, W) bool, True on the band.
    """
    kernel = np.ones((3, 3), np.uint8)
    # cv2's default border value for dilate/erode leaves image-edge pixels unaffected.
    grown = cv2.dilate(instance_map, kernel)  # (H, W)
    shrunk = cv2.erode(instance_map, kernel)  # (H, W)
    return grown != shrunk


class SyntheticRenderer:
    """Draws the images of the built-in dataset: objects of the catalogue's classes on a cluttered
    background, with their class mask, instance mask and object list (no file I/O).

    Args:
        class_names: foreground classes, taken from ``SYNTHETIC_CLASS_NAMES`` (or from ``styles``); mask
            value of ``class_names[i]`` is ``i + 1``.
        num_train: number of images in ``train.txt``.
        num_val: number of images in ``val.txt``.
        image_size: side of the square images, pixels (when ``render`` is given no size).
        seed: every byte written is a function of the settings (same seed -> identical files).
        max_objects: each image shows 1..max_objects objects.
        styles: class name -> style for names outside the catalogue (the VOC- and COCO-shaped sets'
            :func:`~rca_lightning.data.synthetic_named_styles.named_styles`); None: the catalogue's.
        film_grain: standard deviation of a per-pixel luminance noise, grey levels (the real-size sets use it
            so that their JPEGs are about as large as photographs'); 0: none.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        num_train: int = 240,
        num_val: int = 80,
        image_size: int = 160,
        seed: int = 0,
        max_objects: int = 4,
        styles: Mapping[str, ClassStyle] | None = None,
        film_grain: float = 0.0,
    ) -> None:
        class_names = tuple(str(name) for name in class_names)
        known = CLASS_CATALOGUE if styles is None else styles
        unknown = [name for name in class_names if name not in known]
        if unknown or not class_names:
            raise InvalidSetting(
                f"data.class_names: unknown synthetic class(es) {unknown or '(empty list)'}; "
                f"expected names from {list(SYNTHETIC_CLASS_NAMES if styles is None else known)}"
            )
        if len(set(class_names)) != len(class_names):
            raise InvalidSetting(
                f"data.class_names: duplicate names in {list(class_names)}; expected unique names"
            )
        for setting, value, minimum in (
            ("num_train", num_train, 1),
            ("num_val", num_val, 1),
            ("image_size", image_size, 32),
            ("max_objects", max_objects, 1),
        ):
            if int(value) != value or value < minimum:
                raise InvalidSetting(f"data.generator.{setting}={value!r}: expected an integer >= {minimum}")
        self.class_names = class_names
        self.styles = tuple(known[name] for name in class_names)  # style of class index i
        self.num_train = int(num_train)
        self.num_val = int(num_val)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.max_objects = int(max_objects)
        self.film_grain = float(film_grain)

    def render(self, rng: np.random.Generator, size: tuple[int, int] | None = None) -> RenderedImage:
        """Draw one image with its class mask, instance mask and object list (no file I/O).

        Args:
            rng: the image's generator (every pixel is a function of its state).
            size: (height, width) in pixels; None: ``image_size`` square. Lengths that scale with the image
                (object extents, blob radii, line widths) scale with the shorter side.
        """
        height, width = (self.image_size, self.image_size) if size is None else size
        image = self._background(rng, height, width)  # (H, W, 3) float32
        self._draw_distractors(image, rng)
        instance_map = np.zeros((height, width), np.uint8)  # (H, W) 0 = background
        object_classes: list[int] = []
        placed_areas: list[int] = []
        num_objects = int(rng.integers(1, self.max_objects + 1))
        for _ in range(num_objects):
            class_index = int(rng.integers(len(self.class_names)))
            self._place_object(image, instance_map, object_classes, placed_areas, class_index, rng)
        for _ in range(100):  # every image shows at least one object
            if object_classes:
                break
            class_index = int(rng.integers(len(self.class_names)))
            self._place_object(image, instance_map, object_classes, placed_areas, class_index, rng)
        else:
            raise RuntimeError(f"could not place any object in a {height} x {width} image")

        # Anti-aliasing blur, a little sensor noise, then quantise.
        image = cv2.GaussianBlur(image, (0, 0), 0.6)
        image += rng.normal(0.0, 3.0, image.shape).astype(np.float32)
        if self.film_grain:
            image += rng.normal(0.0, self.film_grain, (height, width, 1)).astype(np.float32)
        image_u8 = np.clip(image + 0.5, 0, 255).astype(np.uint8)

        band = border_band(instance_map)  # (H, W)
        lookup = np.array([0] + [c + 1 for c in object_classes], np.uint8)
        class_mask = lookup[instance_map]
        class_mask[band] = IGNORE_INDEX
        object_mask = instance_map.copy()
        object_mask[band] = IGNORE_INDEX

        objects = []
        for instance, class_index in enumerate(object_classes, start=1):
            ys, xs = np.nonzero(instance_map == instance)
            box = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)
            at_edge = (xs.min() == 0, ys.min() == 0, xs.max() == width - 1, ys.max() == height - 1)
            truncated = bool(any(at_edge))
            objects.append((class_index, box, truncated))
        return RenderedImage(image_u8, class_mask, object_mask, objects, instance_map)

    def _random_class_colour(self, rng: np.random.Generator) -> np.ndarray:
        """A colour from a random catalogue class's hue range: distractors share the class colours."""
        style = self.styles[int(rng.integers(len(self.class_names)))]
        hue = style.hue + rng.uniform(-style.hue_width, style.hue_width)
        return _hsv_to_rgb(hue, rng.uniform(*style.saturation), rng.uniform(*style.value))

    def _background(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        side = min(height, width)
        base = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, 0.45), rng.uniform(0.3, 0.8))
        cells = int(rng.integers(3, 7))
        smooth = cv2.resize(
            rng.normal(0.0, 45.0, (cells, cells, 3)).astype(np.float32),
            (width, height),
            interpolation=cv2.INTER_CUBIC,
        )
        image = base[None, None, :] + smooth  # (H, W, 3)
        # Colour fields: large soft-edged regions of random colours.
        for _ in range(int(rng.integers(2, 6))):
            field = np.zeros((height, width), np.float32)
            centre = rng.uniform(0, (width, height))
            radius = rng.uniform(0.15, 0.5) * side
            points = (
                centre + regular_polygon(int(rng.integers(3, 8)), phase=rng.uniform(0, 2 * np.pi)) * radius
            )
            cv2.fillPoly(field, [np.round(points * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
            field = cv2.GaussianBlur(field, (0, 0), rng.uniform(1.0, 6.0))[:, :, None]
            colour = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.9))
            image = image * (1 - 0.7 * field) + colour * 0.7 * field
        fine_noise = rng.normal(0.0, 12.0, (height // 4, width // 4, 3)).astype(np.float32)
        fine = cv2.resize(fine_noise, (width, height))
        return (image + fine).astype(np.float32)

    def _draw_distractors(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """Thin lines, arcs and blobs in class colours that belong to no class (mask stays 0)."""
        height, width = image.shape[:2]
        side = min(height, width)
        scale = side / 160.0
        for _ in range(int(rng.integers(2, 7))):
            kind = rng.integers(3)
            colour = tuple(float(c) for c in self._random_class_colour(rng))
            if kind == 0:  # thin polyline
                points = rng.uniform(-0.1, 1.1, (int(rng.integers(2, 5)), 2)) * (width, height)
                thickness = max(1, int(round(rng.uniform(1.0, 2.5) * scale)))
                cv2.polylines(
                    image, [np.round(points).astype(np.int32)], False, colour, thickness, cv2.LINE_AA
                )
            elif kind == 1:  # arc of an ellipse
                centre = tuple(int(c) for c in rng.uniform(0, (width, height)))
                axes = tuple(int(a) for a in rng.uniform(0.08, 0.3, 2) * side)
                start = float(rng.uniform(0, 360))
                thickness = max(1, int(round(rng.uniform(1.0, 3.0) * scale)))
                cv2.ellipse(
                    image, centre, axes, float(rng.uniform(0, 180)), start, start + rng.uniform(60, 200),
                    colour, thickness, cv2.LINE_AA,
                )  # fmt: skip
            else:  # irregular smooth blob, flat or speckled
                count = 24
                angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
                # Radii smoothed around the outline (circularly): a lumpy blob, never a spiky star-like
                # outline, so no distractor looks like an object of a class.
                radii = rng.uniform(0.5, 1.3, count)
                kernel = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
                wobble = sum(w * np.roll(radii, shift) for w, shift in zip(kernel, range(-2, 3), strict=True))
                radius = wobble * rng.uniform(0.04, 0.14) * side
                centre = rng.uniform(0, (width, height))
                points = centre + radius[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
                blob = np.zeros((height, width), np.uint8)
                cv2.fillPoly(blob, [np.round(points * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
                inside = blob.astype(bool)
                shade = 1.0 + rng.uniform(0.0, 0.35) * (rng.random(int(inside.sum())) - 0.5)
                image[inside] = np.asarray(colour, np.float32)[None, :] * shade[:, None]

    def _place_object(
        self,
        image: np.ndarray,
        instance_map: np.ndarray,
        object_classes: list[int],
        placed_areas: list[int],
        class_index: int,
        rng: np.random.Generator,
        attempts: int = 12,
    ) -> None:
        """Try to draw one object of ``class_index`` on top; keep every object well visible."""
        height, width = instance_map.shape
        side = min(height, width)
        style = self.styles[class_index]
        new_id = len(object_classes) + 1
        for _ in range(attempts):
            extent = rng.uniform(0.18, 0.54) * side  # object diameter, ~3x range
            aspect = math.exp(rng.uniform(math.log(style.aspect[0]), math.log(style.aspect[1])))
            angle = rng.uniform(0, 2 * np.pi)
            margin = 0.3 * extent
            centre = rng.uniform(margin, (width - margin, height - margin))
            half_x, half_y = extent / 2 / math.sqrt(aspect), extent / 2 * math.sqrt(aspect)
            cos_a, sin_a = math.cos(angle), math.sin(angle)
            # local (u, v) -> image (x, y): scale by the half axes, then rotate, then translate
            transform = np.array([[cos_a * half_x, -sin_a * half_y], [sin_a * half_x, cos_a * half_y]])
            shape_mask = np.zeros((height, width), np.uint8)
            for polygon, value in SHAPES[style.shape]:
                points = polygon @ transform.T + centre
                cv2.fillPoly(shape_mask, [np.round(points * 16).astype(np.int32)], value, cv2.LINE_8, shift=4)
            inside = shape_mask.astype(bool)
            area = int(inside.sum())
            if area < max(20, 0.01 * height * width):
                continue
            candidate = instance_map.copy()
            candidate[inside] = new_id
            if not self._all_visible(candidate, [*placed_areas, area]):
                continue
            ys, xs = np.nonzero(inside)
            dx, dy = xs - centre[0], ys - centre[1]
            u = ((cos_a * dx + sin_a * dy) / half_x).astype(np.float32)
            v = ((-sin_a * dx + cos_a * dy) / half_y).astype(np.float32)
            image[ys, xs] = self._object_colours(style, u, v, rng)
            instance_map[:] = candidate
            object_classes.append(class_index)
            placed_areas.append(area)
            return

    @staticmethod
    def _all_visible(candidate: np.ndarray, placed_areas: Sequence[int]) -> bool:
        """Every instance keeps most of its area and enough interior (non-band) pixels to be scored.

        Args:
            candidate: (H, W) uint8 instance map with the new object drawn on top.
            placed_areas: area of each instance when it was drawn, new object last.
        """
        num_instances = len(placed_areas)
        visible = np.bincount(candidate.reshape(-1), minlength=num_instances + 1)[1:]  # (N,)
        interior = candidate.copy()
        interior[border_band(candidate)] = 0
        interior_counts = np.bincount(interior.reshape(-1), minlength=num_instances + 1)[1:]  # (N,)
        keeps_area = visible >= 0.45 * np.asarray(placed_areas)
        keeps_interior = interior_counts >= np.maximum(8, 0.25 * visible)
        return bool(np.all(keeps_area & keeps_interior))

    def _object_colours(
        self, style: ClassStyle, u: np.ndarray, v: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Colours of an object's pixels from its local coordinates.

        Args:
            u, v: (N,) local coordinates of the object's pixels (about -1..1).

        Returns:
            (N, 3) float32 RGB.
        """
        hue = style.hue + rng.uniform(-style.hue_width, style.hue_width)
        main = _hsv_to_rgb(hue, rng.uniform(*style.saturation), rng.uniform(*style.value))
        second = _hsv_to_rgb(
            hue + style.second_hue_offset,
            rng.uniform(*style.saturation),
            style.second_value * rng.uniform(0.85, 1.0),
        )
        frequency = rng.uniform(*style.frequency)
        phase = rng.uniform(0, 2 * np.pi)
        if style.texture in ("noise", "speckle"):
            # these textures sample a grid, so evaluate them on the object's bounding box
            weight = self._grid_texture(style.texture, u, v, frequency, phase, rng)
        else:
            weight = TEXTURES[style.texture](u, v, frequency, phase, rng)
        weight = weight.astype(np.float32)[:, None]  # (N, 1)
        colours = main[None, :] * (1 - weight) + second[None, :] * weight  # (N, 3)
        light = rng.uniform(-0.2, 0.2, 2)
        colours *= (1.0 + light[0] * u + light[1] * v)[:, None]
        if style.marking is not None:
            mark_u, mark_v, mark_radius, mark_colour = style.marking
            on_mark = (u - mark_u) ** 2 + (v - mark_v) ** 2 < mark_radius**2
            colours[on_mark] = np.asarray(mark_colour, np.float32)
        return colours

    @staticmethod
    def _grid_texture(
        name: str, u: np.ndarray, v: np.ndarray, frequency: float, phase: float, rng: np.random.Generator
    ) -> np.ndarray:
        resolution = 32
        grid_u, grid_v = np.meshgrid(
            np.linspace(-1.2, 1.2, resolution, dtype=np.float32),
            np.linspace(-1.2, 1.2, resolution, dtype=np.float32),
        )
        grid = TEXTURES[name](grid_u, grid_v, frequency, phase, rng)  # (R, R)
        cols = np.clip(np.round((u + 1.2) / 2.4 * (resolution - 1)), 0, resolution - 1).astype(np.int64)
        rows = np.clip(np.round((v + 1.2) / 2.4 * (resolution - 1)), 0, resolution - 1).astype(np.int64)
        return grid[rows, cols]

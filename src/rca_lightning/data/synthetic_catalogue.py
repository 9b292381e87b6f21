"""The built-in dataset's catalogue: shapes, textures and the style of every class it can draw."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

# ---------------------------------------------------------------------------------------------
# Shapes: lists of (polygon in local unit coordinates, fill value); later entries are drawn over
# earlier ones, so a 0 entry cuts a hole (ring, crescent).
# ---------------------------------------------------------------------------------------------
ShapeOps = list[tuple[np.ndarray, int]]


def regular_polygon(num_vertices: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2.0 * np.pi * np.arange(num_vertices) / num_vertices
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (N, 2)


def _star(points: int, inner: float) -> np.ndarray:
    angles = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 16.5


SHAPES: dict[str, ShapeOps] = {
    "disc": [(regular_polygon(48), 1)],
    "square": [(np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 1)],
    "triangle": [(regular_polygon(3, phase=-np.pi / 2) * 1.1 + [0.0, 0.15], 1)],
    "ring": [(regular_polygon(48), 1), (regular_polygon(48, radius=0.55), 0)],
    "star": [(_star(5, 0.45), 1)],
    "cross": [
        (
            np.array(
                [
                    [-0.3, -1],
                    [0.3, -1],
                    [0.3, -0.3],
                    [1, -0.3],
                    [1, 0.3],
                    [0.3, 0.3],
                    [0.3, 1],
                    [-0.3, 1],
                    [-0.3, 0.3],
                    [-1, 0.3],
                    [-1, -0.3],
                    [-0.3, -0.3],
                ]
            ),
            1,
        )
    ],
    "ellipse": [(regular_polygon(48) * [1.0, 0.5], 1)],
    "diamond": [(np.array([[1.0, 0.0], [0.0, 0.6], [-1.0, 0.0], [0.0, -0.6]]), 1)],
    "hexagon": [(regular_polygon(6, radius=0.95), 1)],
    "crescent": [(regular_polygon(48), 1), (regular_polygon(48, radius=0.8) + [0.45, -0.1], 0)],
    "arrow": [
        (
            np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.25], [-1, 0.25]]),
            1,
        )
    ],
    "heart": [(_heart(), 1)],
}

# ---------------------------------------------------------------------------------------------
# Textures: functions of local coordinates (u, v) (about -1..1 over the object), a frequency and
# a phase, returning a mixing weight in [0, 1] between the object's two colours.
# ---------------------------------------------------------------------------------------------
TextureFn = Callable[[np.ndarray, np.ndarray, float, float, np.random.Generator], np.ndarray]


def _soft(wave: np.ndarray) -> np.ndarray:
    return np.clip(0.5 + 2.0 * wave, 0.0, 1.0)


def _smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


TEXTURES: dict[str, TextureFn] = {
    "stripes": lambda u, v, f, p, rng: _soft(np.sin(2 * np.pi * f * u + p)),
    "checker": lambda u, v, f, p, rng: _soft(np.sin(np.pi * f * u + p) * np.sin(np.pi * f * v + p)),
    "dots": lambda u, v, f, p, rng: (
        ((np.mod(f * u + p, 1.0) - 0.5) ** 2 + (np.mod(f * v + p, 1.0) - 0.5) ** 2) < 0.09
    ).astype(np.float32),
    "rings": lambda u, v, f, p, rng: _soft(np.sin(2 * np.pi * f * np.hypot(u, v) + p)),
    "grid": lambda u, v, f, p, rng: (
        (np.abs(np.sin(np.pi * f * u + p)) < 0.3) | (np.abs(np.sin(np.pi * f * v + p)) < 0.3)
    ).astype(np.float32),
    "noise": lambda u, v, f, p, rng: np.clip(
        (_smooth_noise(u.shape, max(2, int(f * 2)), rng) - 0.5) * 3 + 0.5, 0, 1
    ),
    "waves": lambda u, v, f, p, rng: _soft(np.sin(2 * np.pi * f * u + 1.5 * np.sin(2 * np.pi * f * v + p))),
    "speckle": lambda u, v, f, p, rng: (rng.random(u.shape) < 0.35).astype(np.float32),
    "spokes": lambda u, v, f, p, rng: _soft(np.sin(2 * f * np.arctan2(v, u) + p)),
    "hatch": lambda u, v, f, p, rng: np.maximum(
        _soft(np.sin(np.pi * f * (u + v) + p) - 0.6), _soft(np.sin(np.pi * f * (u - v) + p) - 0.6)
    ),
    "zigzag": lambda u, v, f, p, rng: _soft(
        np.sin(2 * np.pi * f * (u + 0.6 * np.abs(np.mod(f * v, 1.0) - 0.5)) + p)
    ),
    "gradient": lambda u, v, f, p, rng: np.clip(0.5 + 0.5 * u * math.cos(p) + 0.5 * v * math.sin(p), 0, 1),
}


@dataclass(frozen=True)
class ClassStyle:
    """Appearance statistics of one synthetic class.

    Attributes:
        shape: key of ``SHAPES``.
        hue: centre of the hue range in degrees; objects draw their hue within +-``hue_width``.
        hue_width: half width of the hue range in degrees.
        saturation: range of the main colour's saturation (0..1).
        value: range of the main colour's brightness (0..1).
        second_hue_offset: hue offset of the texture's second colour, degrees.
        second_value: brightness of the texture's second colour.
        texture: key of ``TEXTURES``.
        frequency: range of texture cycles across the object.
        aspect: range of the object's height/width ratio.
        marking: optional (u, v, radius, (r, g, b)) small disc in local coordinates.
    """

    shape: str
    hue: float
    hue_width: float
    saturation: tuple[float, float]
    value: tuple[float, float]
    second_hue_offset: float
    second_value: float
    texture: str
    frequency: tuple[float, float]
    aspect: tuple[float, float] = (0.8, 1.25)
    marking: tuple[float, float, float, tuple[int, int, int]] | None = None


# Each class has a texture of its own that no background has: the backgrounds are smooth colour noise, so
# "noise" goes to a class outside the default eight (hexagon) and the star, a default class, is speckled.
CLASS_CATALOGUE: dict[str, ClassStyle] = {
    "disc": ClassStyle("disc", 0, 16, (0.6, 0.9), (0.6, 0.9), 20, 0.35, "dots", (2.5, 4.0), (0.9, 1.1),
                       (0.35, -0.3, 0.17, (20, 20, 20))),
    "square": ClassStyle("square", 35, 14, (0.6, 0.95), (0.7, 1.0), 180, 0.3, "checker", (2.0, 3.5),
                         marking=(0.5, 0.5, 0.2, (250, 250, 250))),
    "triangle": ClassStyle("triangle", 60, 12, (0.6, 0.9), (0.7, 1.0), -40, 0.45, "stripes", (2.5, 4.5),
                           marking=(0.0, -0.45, 0.16, (30, 30, 160))),
    "ring": ClassStyle("ring", 120, 18, (0.5, 0.85), (0.5, 0.85), 60, 0.9, "spokes", (4.0, 7.0),
                       (0.85, 1.15)),
    "star": ClassStyle("star", 180, 15, (0.5, 0.9), (0.6, 0.95), 140, 0.4, "speckle", (1.0, 1.0),
                       marking=(0.0, 0.0, 0.2, (255, 230, 40))),
    "cross": ClassStyle("cross", 225, 15, (0.6, 0.95), (0.55, 0.9), 0, 0.95, "grid", (3.0, 5.0),
                        marking=(0.0, -0.72, 0.2, (230, 30, 30))),
    "ellipse": ClassStyle("ellipse", 270, 15, (0.5, 0.85), (0.55, 0.9), -60, 0.3, "rings", (2.0, 3.5),
                          (0.45, 0.65), (0.65, 0.0, 0.22, (240, 240, 240))),
    "diamond": ClassStyle("diamond", 315, 14, (0.6, 0.95), (0.6, 0.95), 90, 0.8, "hatch", (3.0, 5.0)),
    "hexagon": ClassStyle("hexagon", 90, 12, (0.5, 0.9), (0.5, 0.85), 180, 0.9, "noise", (2.0, 4.0),
                          marking=(-0.45, 0.0, 0.2, (10, 10, 10))),
    "crescent": ClassStyle("crescent", 150, 14, (0.5, 0.9), (0.6, 0.95), -90, 0.3, "waves", (1.5, 3.0),
                           marking=(-0.7, 0.0, 0.18, (250, 120, 0))),
    "arrow": ClassStyle("arrow", 200, 12, (0.4, 0.8), (0.7, 1.0), 30, 0.25, "zigzag", (2.0, 3.0), (0.9, 1.1),
                        (0.75, 0.0, 0.16, (250, 250, 250))),
    "heart": ClassStyle("heart", 345, 12, (0.5, 0.9), (0.6, 0.95), 40, 0.95, "gradient", (1.0, 1.0),
                        (0.9, 1.1)),
}  # fmt: skip

SYNTHETIC_CLASS_NAMES: tuple[str, ...] = tuple(CLASS_CATALOGUE)
"""Every class name the generator can draw."""

DEFAULT_SYNTHETIC_CLASSES: tuple[str, ...] = SYNTHETIC_CLASS_NAMES[:8]
"""The eight classes used by the default configuration."""

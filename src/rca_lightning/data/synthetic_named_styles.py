"""A drawable style for every name of a class list (the 20 VOC and the 80 COCO names), so the real-size sets
(:mod:`~rca_lightning.data.synthetic_voc_like`, :mod:`~rca_lightning.data.synthetic_coco_like`) carry the
real class names while the renderer draws the catalogue's shapes and textures.

Class ``i`` of the list gets shape ``i mod 12`` and texture ``(i + i // 12) mod 12`` of the catalogue, so the
first 144 classes have distinct (shape, texture) pairs, a hue on the golden angle (``i x 137.5`` degrees)
and, for three classes in four, a small marking whose place and colour also vary with ``i``. The classes are
distinct enough to tell apart; this data measures cost and runs every code path, it is not meant to be learnt
to high accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

from rca_lightning.data.synthetic_catalogue import CLASS_CATALOGUE, SHAPES, TEXTURES, ClassStyle

_GOLDEN_ANGLE = 137.508
# Each catalogue texture and shape once: their frequency and aspect ranges as the catalogue draws them.
_TEXTURE_FREQUENCY = {style.texture: style.frequency for style in CLASS_CATALOGUE.values()}
_SHAPE_ASPECT = {style.shape: style.aspect for style in CLASS_CATALOGUE.values()}
# Marking places (local u, v) and colours, cycled through with the class index.
_MARK_PLACES = ((0.0, 0.0), (0.35, -0.3), (-0.45, 0.0))
_MARK_COLOURS = ((20, 20, 20), (250, 250, 250), (230, 30, 30), (30, 30, 160), (255, 230, 40))


def named_style(index: int) -> ClassStyle:
    """The style of the ``index``-th class of a list (module docstring)."""
    shapes, textures = list(SHAPES), list(TEXTURES)
    shape = shapes[index % len(shapes)]
    texture = textures[(index + index // len(shapes)) % len(textures)]
    marking = None
    if index % 4 != 3:
        mark_u, mark_v = _MARK_PLACES[index % 4]
        marking = (mark_u, mark_v, 0.18, _MARK_COLOURS[(index // 4) % len(_MARK_COLOURS)])
    return ClassStyle(
        shape=shape,
        hue=(index * _GOLDEN_ANGLE) % 360.0,
        hue_width=10.0,
        saturation=(0.5, 0.9),
        value=(0.55, 0.95),
        second_hue_offset=float((index * 53) % 360),
        second_value=0.3 if index % 2 == 0 else 0.9,
        texture=texture,
        frequency=_TEXTURE_FREQUENCY[texture],
        aspect=_SHAPE_ASPECT[shape],
        marking=marking,
    )


def named_styles(class_names: Sequence[str]) -> dict[str, ClassStyle]:
    """Class name -> style, by the name's position in ``class_names`` (the renderer's ``styles``)."""
    return {name: named_style(index) for index, name in enumerate(class_names)}

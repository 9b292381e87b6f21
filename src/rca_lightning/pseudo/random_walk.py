"""IRN's random walk (Ahn et al., CVPR 2019): seeds spread along inter-pixel affinities from a boundary map.

At stride 4 (h x w pixels), the affinity of two pixels i and j closer than ``radius`` (``|i - j|^2 <
radius^2``) is ``a_ij = 1 - max B`` over the pixels of the straight path from i to j (both ends included,
:func:`~rca_lightning.utils.pixel_paths.path_offsets`); ``a_ii = 1``, other pairs 0. The transition matrix
is ``A ** beta`` (elementwise) with every column divided by its sum, and the walk is ``2 ** exp_times``
steps: ``walk = (seeds * (1 - B)) @ T ** 2 ** exp_times`` per class, a row vector of the h * w pixels.

IRN squares a dense (hw, hw) matrix ``exp_times`` times, which needs (HW / 16)^2 floats (a 512 x 512 image:
1 GiB in float32). Here T is a sparse matrix with one entry per pixel pair in the disc (about ``pi radius^2``
per pixel), and the walk applies it ``2 ** exp_times`` times to the (hw, K) seeds: memory grows as hw.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rca_lightning.pseudo.pseudo_masks import channels_to_labels
from rca_lightning.utils.pixel_paths import disc_offsets, path_offsets, shifted

# The walk's 2 ** exp_times steps at most 2 ** 16 (IRN: 2 ** 8); each step is a sparse product over the map.
MAX_EXP_TIMES = 16


def pair_affinities(boundary: torch.Tensor, radius: int) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Affinities of every pixel with its neighbours in the disc.

    Args:
        boundary: (h, w) boundary probabilities B in [0, 1].
        radius: pairs with ``dy^2 + dx^2 < radius^2``.

    Returns:
        The offsets (O of them, :func:`disc_offsets`) and (O, h, w) affinities ``a(p, p + offset)``, 0 where
        ``p + offset`` is outside the map.
    """
    offsets = list(disc_offsets(radius))
    affinities = torch.empty((len(offsets), *boundary.shape), dtype=boundary.dtype, device=boundary.device)
    for index, (dy, dx) in enumerate(offsets):  # geometry of the disc (~pi r^2 offsets), not images
        # The path's maximum; a point outside the map (only when the far end is outside) gives B = 1.
        peak = torch.stack([shifted(boundary, py, px, 1.0) for py, px in path_offsets(dy, dx)]).amax(0)
        affinities[index] = 1.0 - peak
    return offsets, affinities


def transition_matrix(boundary: torch.Tensor, radius: int = 5, beta: float = 10.0) -> torch.Tensor:
    """The sparse (hw, hw) matrix R with ``R[j, i] = T[i, j]`` (a row per destination pixel j), so that one
    step of the walk is ``R @ x`` for (hw, K) column vectors: T = ``A ** beta`` with columns summing to 1.
    """
    height, width = boundary.shape
    offsets, affinities = pair_affinities(boundary, radius)
    weights = torch.cat([torch.ones_like(boundary)[None], affinities.clamp_min(0) ** beta])  # (O + 1, h, w)
    weights = weights / weights.sum(0, keepdim=True)  # column j of T: a(j, j + o)^beta / sum over o
    index = torch.arange(height * width, device=boundary.device).view(height, width)
    rows, cols, values = [index.reshape(-1)], [index.reshape(-1)], [weights[0].reshape(-1)]
    for position, (dy, dx) in enumerate(offsets, start=1):
        partner = shifted(index, dy, dx, -1)  # (h, w): the index of j + o, -1 outside the map
        inside = partner >= 0
        rows.append(index[inside])
        cols.append(partner[inside])
        values.append(weights[position][inside])
    # Row j of R holds T[i, j] for the partners i = j + o of j (A is symmetric: a(i, j) = a(j, i)).
    return (
        torch.sparse_coo_tensor(
            torch.stack([torch.cat(rows), torch.cat(cols)]),
            torch.cat(values),
            (height * width, height * width),
            check_invariants=False,  # built from valid indices above
        )
        .coalesce()
        .to_sparse_csr()
    )


def random_walk(
    seeds: torch.Tensor, boundary: torch.Tensor, radius: int = 5, beta: float = 10.0, exp_times: int = 8
) -> torch.Tensor:
    """Spread (K, h, w) seeds over the (h, w) boundary map: ``2 ** exp_times`` steps of the walk.

    Args:
        seeds: (K, h, w) class scores at the boundary map's resolution (stride 4).
        boundary: (h, w) boundary probabilities in [0, 1].
        radius, beta, exp_times: the walk's settings (IRN at inference: 5, 10, 8).

    Returns:
        (K, h, w) scores after the walk.
    """
    num_classes, height, width = seeds.shape
    if boundary.shape != (height, width):
        raise ValueError(f"boundary (h, w) {tuple(boundary.shape)} does not match seeds {tuple(seeds.shape)}")
    step = transition_matrix(boundary, radius, beta)
    walk = (seeds * (1.0 - boundary)).reshape(num_classes, -1).T.contiguous()  # (hw, K)
    for _ in range(2**exp_times):
        walk = step @ walk
    return walk.T.reshape(num_classes, height, width)


def random_walk_mask(
    seeds: torch.Tensor,
    boundary: torch.Tensor,
    classes: np.ndarray,
    image_size: tuple[int, int],
    background: float = 0.25,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    walk_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """IRN's label map: the walk's scores upsampled x4 (bilinear) and cropped to the image, divided by their
    global maximum, against a constant background score, arg-max.

    Args:
        seeds: (K, h, w) scores of the tagged classes at stride 4 of the walk's image (``h = ceil(H / 4)``
            unscaled).
        boundary: (h, w) boundary probabilities.
        classes: (K,) their class indices.
        image_size: (H, W).
        background: the background plane's score.
        walk_size: the size of the image the boundary map was made from (``image_size`` scaled by the
            boundary network's ``image_scale``; None: ``image_size``): the scores are cropped to it, then
            resized to ``image_size`` (bilinear).

    Returns:
        (H, W) uint8: 0 background, ``class + 1`` elsewhere (no ignored pixels).
    """
    height, width = image_size
    if len(classes) == 0:
        return np.zeros(image_size, np.uint8)
    walked = random_walk(seeds, boundary, radius, beta, exp_times)  # (K, h, w)
    scores = F.interpolate(walked[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    walk_height, walk_width = walk_size or image_size
    scores = scores[:, :walk_height, :walk_width]
    if (walk_height, walk_width) != (height, width):
        scores = F.interpolate(scores[None], size=image_size, mode="bilinear", align_corners=False)[0]
    scores = scores / scores.max().clamp_min(1e-12)
    planes = torch.cat([torch.full_like(scores[:1], background), scores])  # (K + 1, H, W)
    return channels_to_labels(planes.argmax(0).cpu().numpy(), classes)


__all__ = [
    "MAX_EXP_TIMES",
    "pair_affinities",
    "random_walk",
    "random_walk_mask",
    "transition_matrix",
]

"""Maps of augmented crops pasted back onto a fixed grid over their original images (for the
attention accumulation, whose per-image store is in image coordinates)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def paste_crops_into_image_grid(
    maps: torch.Tensor, crop_boxes: torch.Tensor, flipped: torch.Tensor, resolution: int
) -> torch.Tensor:
    """Resample maps of augmented crops onto an S x S grid over each crop's original image.

    Grid pixel (i, j) has its centre at ((j + 0.5) / S, (i + 0.5) / S) in normalised image coordinates;
    it takes the bilinear sample of the crop's map at that point (un-flipped first; the map's edge
    values extend half a map pixel outwards) and 0 where the point lies outside the crop window.

    Args:
        maps: (B, C, h, w) maps of the augmented images.
        crop_boxes: (B, 4) (x0, y0, x1, y1) window of each augmented image in normalised coordinates of
            its original image (``crop_window``).
        flipped: (B,) bool, whether the augmented image was mirrored left-right after the crop.
        resolution: S.

    Returns:
        (B, C, S, S) float maps in image coordinates.
    """
    batch_size, num_classes = maps.shape[:2]
    boxes = crop_boxes.to(maps.device, torch.float32)
    x0, y0, x1, y1 = boxes.unbind(-1)  # (B,) each
    box_width, box_height = x1 - x0, y1 - y0
    mirror = 1.0 - 2.0 * flipped.to(maps.device, torch.float32)  # (B,) -1 where flipped
    # affine_grid's output coordinate X = 2u - 1 (u: image coordinate) maps to the crop coordinate
    # 2 (u - x0) / width - 1, mirrored when the crop was flipped.
    theta = torch.zeros(batch_size, 2, 3, device=maps.device)  # (B, 2, 3)
    theta[:, 0, 0] = mirror / box_width
    theta[:, 0, 2] = mirror * ((1.0 - 2.0 * x0) / box_width - 1.0)
    theta[:, 1, 1] = 1.0 / box_height
    theta[:, 1, 2] = (1.0 - 2.0 * y0) / box_height - 1.0
    size = (batch_size, num_classes, resolution, resolution)
    grid = F.affine_grid(theta, list(size), align_corners=False)  # (B, S, S, 2)
    sampled = F.grid_sample(
        maps.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (B, C, S, S)
    inside = (grid.abs() <= 1.0).all(dim=-1)  # (B, S, S)
    return sampled * inside[:, None]


__all__ = ["paste_crops_into_image_grid"]

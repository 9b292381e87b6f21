"""Pictures as files, arrays and tensors: reading images, normalising, palette-PNG masks, colouring masks
and maps, multi-scale + flip views and crop geometry. Imports only ``utils`` (and torch, numpy, PIL, cv2)."""

from rca_lightning.imaging.crop_grid import paste_crops_into_image_grid
from rca_lightning.imaging.drawing import (
    CLASS_OVERLAY_ALPHA,
    cam_overlay,
    class_overlay,
    colourise_mask,
    turbo_colours,
)
from rca_lightning.imaging.image_arrays import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    count_pixels,
    denormalise_images,
    normalise_images,
    read_rgb_file,
    rgb_array,
)
from rca_lightning.imaging.palette_png import (
    mask_file_is_complete,
    palette_png_bytes,
    read_mask_png,
    voc_palette,
    write_palette_png,
)
from rca_lightning.imaging.test_time_augmentation import (
    CAM_SCALES,
    average_over_views,
    check_views,
    sum_over_views,
)

__all__ = [
    "CAM_SCALES",
    "CLASS_OVERLAY_ALPHA",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "average_over_views",
    "cam_overlay",
    "check_views",
    "class_overlay",
    "colourise_mask",
    "count_pixels",
    "denormalise_images",
    "mask_file_is_complete",
    "normalise_images",
    "palette_png_bytes",
    "paste_crops_into_image_grid",
    "read_mask_png",
    "read_rgb_file",
    "rgb_array",
    "sum_over_views",
    "turbo_colours",
    "voc_palette",
    "write_palette_png",
]

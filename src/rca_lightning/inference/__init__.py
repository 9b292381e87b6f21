"""Using a trained model: the one inference path of the project.

Low-level pieces (torch, numpy and PIL only; every stage imports them):

- :mod:`~rca_lightning.inference.image_arrays`: image files -> uint8 RGB, normalise / denormalise;
- :mod:`~rca_lightning.inference.palette_png`: masks as palette PNGs (the one writer and reader);
- :mod:`~rca_lightning.inference.cam_scores`: "ReLU, then divide by the maximum", masks from scores;
- :mod:`~rca_lightning.inference.test_time_augmentation`: multi-scale + flip inference.

Built on the trained networks (import them from their modules, or ``Segmenter`` from ``rca_lightning``):

- :mod:`~rca_lightning.inference.trained_runs`: a run folder -> eval-mode network, class names,
  normalisation;
- :mod:`~rca_lightning.inference.segmenter`: ``Segmenter.from_run(run_dir).segment(image)``;
- :mod:`~rca_lightning.inference.prediction`: ``rca-predict`` over files;
- :mod:`~rca_lightning.inference.export`: ``rca-export`` to ONNX / TorchScript, checked against PyTorch.
"""

from rca_lightning.inference.cam_scores import masks_from_scores, normalized_cam_scores, peak_normalise
from rca_lightning.inference.image_arrays import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalise_images,
    normalise_images,
    read_rgb_file,
    rgb_array,
)
from rca_lightning.inference.palette_png import (
    mask_file_is_complete,
    palette_png_bytes,
    read_mask_png,
    voc_palette,
    write_palette_png,
)
from rca_lightning.inference.test_time_augmentation import average_over_views, check_views, sum_over_views

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "average_over_views",
    "check_views",
    "denormalise_images",
    "mask_file_is_complete",
    "masks_from_scores",
    "normalise_images",
    "normalized_cam_scores",
    "palette_png_bytes",
    "peak_normalise",
    "read_mask_png",
    "read_rgb_file",
    "rgb_array",
    "sum_over_views",
    "voc_palette",
    "write_palette_png",
]

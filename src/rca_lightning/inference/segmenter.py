"""``Segmenter``: a trained run's network as a function from an image to its mask.

    segmenter = Segmenter.from_run("logs/pipeline/runs/<time>")
    mask = segmenter.segment("photo.jpg")  # (H, W) uint8: 0 background, i + 1 = class_names[i]

The segmentation network's masks are the argmax of its logits averaged over the test-time views (and its
run's CRF, if it was evaluated with one): exactly its ``rca-seg`` evaluation path. A classifier's masks
(``source="cams"``) come from its CAMs summed over the views, each class the classifier finds in the image
(``sigmoid(logit) > 0.5``) scaled to [0, 1] by its maximum, and a constant background score
(``cam_threshold``): the rule the CAM evaluation scores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rca_lightning.imaging.image_arrays import normalise_images, read_rgb_file, rgb_array
from rca_lightning.imaging.test_time_augmentation import CAM_SCALES, check_views, sum_over_views
from rca_lightning.inference.trained_runs import TrainedRun, load_trained_run
from rca_lightning.pseudo.cam_scores import masks_from_scores, peak_normalise
from rca_lightning.utils.errors import InvalidSetting

ImageInput = str | os.PathLike | Image.Image | np.ndarray


def as_rgb_array(image: ImageInput) -> np.ndarray:
    """A path, a PIL image or an (H, W, 3) / (H, W) uint8 array -> (H, W, 3) uint8 RGB."""
    if isinstance(image, str | os.PathLike):
        return read_rgb_file(image)
    if isinstance(image, Image.Image):
        return rgb_array(image)
    array = np.asarray(image)
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (3, 4))
    ):
        raise InvalidSetting(
            f"image: expected a path, a PIL image or an HxWx3 uint8 array, got {array.dtype} {array.shape}"
        )
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.array(array[:, :, :3])  # a writable, contiguous copy (arrays from PIL are read-only)


class Segmenter:
    """Masks of images from a trained network.

    Args:
        run: the loaded run (:func:`rca_lightning.inference.trained_runs.load_trained_run`).
        tta_scales: input scales of the test-time views (None: the run's own: the segmentation network's
            evaluation views, or the views of the run's CAMs).
        tta_flip: also run the mirrored images (None: the run's own).
        cam_threshold: background score of ``source="cams"`` (None: the one the run's evaluation chose).
        device: ``cpu``, ``cuda``, ... (None: the GPU when there is one).
    """

    def __init__(
        self,
        run: TrainedRun,
        tta_scales: Sequence[float] | None = None,
        tta_flip: bool | None = None,
        cam_threshold: float | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.run = run
        if run.source == "seg":
            default_scales, default_flip = run.model.hparams.tta_scales, run.model.hparams.tta_flip
        else:
            default_scales, default_flip = run.cam_views or (CAM_SCALES, True)
        self.scales, self.flip = check_views(
            default_scales if tta_scales is None else tta_scales,
            default_flip if tta_flip is None else tta_flip,
        )
        if run.source == "cams":
            cam_threshold = run.cam_threshold if cam_threshold is None else float(cam_threshold)
            if cam_threshold is None or not 0.0 <= cam_threshold <= 1.0:
                raise InvalidSetting(
                    f"cam_threshold={cam_threshold}: expected a background score in [0, 1] (the run records "
                    "none: set cam_threshold=...)"
                )
        self.cam_threshold = cam_threshold
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = run.model.to(self.device).eval()

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        source: str = "auto",
        tta_scales: Sequence[float] | None = None,
        tta_flip: bool | None = None,
        cam_threshold: float | None = None,
        device: str | torch.device | None = None,
        trusted_targets: Iterable[str] = (),
    ) -> Segmenter:
        """The segmenter of an ``rca-pipeline``, ``rca-seg`` or ``rca-train`` run folder.

        ``source``: ``seg`` (the segmentation network), ``cams`` (the classifier's CAMs) or ``auto`` (the
        segmentation network when the run has one). ``trusted_targets``: classes the run's config may build
        beyond those the shipped configs build. The other arguments are those of the class.
        """
        run = load_trained_run(Path(run_dir), source, trusted_targets)
        return cls(run, tta_scales, tta_flip, cam_threshold, device)

    @property
    def class_names(self) -> list[str]:
        """The C foreground classes; mask value ``i + 1`` is ``class_names[i]``."""
        return self.run.class_names

    def settings(self) -> dict:
        """What the masks depend on, as plain values (recorded beside predictions)."""
        record = {
            "run_folder": str(self.run.folder),
            "checkpoint": str(self.run.checkpoint),
            "source": self.run.source,
            "class_names": list(self.class_names),
            "tta_scales": list(self.scales),
            "tta_flip": self.flip,
        }
        if self.run.source == "cams":
            record["cam_threshold"] = self.cam_threshold
            record["cam_threshold_origin"] = (
                self.run.cam_threshold_origin if self.cam_threshold == self.run.cam_threshold else "setting"
            )
        return record

    @torch.no_grad()
    def predict_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB images of one size -> (B, H, W) uint8 masks (on the CPU)."""
        images = normalise_images(pixels.to(self.device), self.run.image_mean, self.run.image_std)
        if self.run.source == "seg":
            masks = self.model.predict_scores(images, self.scales, self.flip).argmax(1)
        else:
            summed = sum_over_views(self._positive_cam_maps, images, self.scales, self.flip)  # (B, C, H, W)
            found = self.model.class_logits(self.model(images)) > 0  # (B, C): sigmoid > 0.5
            masks = masks_from_scores(peak_normalise(summed) * found[:, :, None, None], self.cam_threshold)
        return masks.to(torch.uint8).cpu()

    def _positive_cam_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.predict_cam_maps(images).float().relu()

    def segment(self, image: ImageInput) -> np.ndarray:
        """The (H, W) uint8 mask of one image (a path, a PIL image or an HxWx3 uint8 array), at its size."""
        pixels = torch.from_numpy(as_rgb_array(image))[None]  # (1, H, W, 3)
        return self.predict_batch(pixels)[0].numpy()


__all__ = ["ImageInput", "Segmenter", "as_rgb_array"]

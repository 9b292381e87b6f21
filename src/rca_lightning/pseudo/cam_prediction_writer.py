"""The prediction writer of ``rca-cams``: one CAM file (or seed file) per image, as soon as it is computed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from rca_lightning.pseudo.cam_writer import CAM_DTYPES, cam_path, save_cam_file
from rca_lightning.pseudo.seed_sources import attention_maps, check_seed_kind, combine_seeds
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.setting_ranges import number_in_range

# The coarsest storage stride: the output stride of the shipped backbones' coarsest setting.
MAX_CAM_STRIDE = 32


class CAMWriter(BasePredictionWriter):
    """Writes each predicted batch to one CAM file per image, as soon as it is computed.

    Nothing is kept between batches, so memory does not grow with the number of images; use it with
    ``trainer.predict(..., return_predictions=False)``. Several ranks may write the same image (the
    distributed sampler pads the last batches): writes are atomic and give the same content.

    Args:
        cams_dir: output folder.
        dtype: stored dtype, ``"float16"`` or ``"uint8"``.
        compress: zip-deflate the files.
        stride: store the maps at 1 / ``stride`` of the image's resolution (see
            :mod:`rca_lightning.pseudo.cam_writer`); 1: at the image's.
        seeds: what the files hold: ``"cams"`` (the predictions), ``"attention"`` (the accumulated
            attention of ``attention_dir`` for the same classes, at the same size, normalised by the rule
            its index records) or ``"max"`` (the pixel-wise max of both); see
            :mod:`rca_lightning.pseudo.seed_sources`.
        attention_dir: folder of a complete attention accumulation (``attention`` and ``max``).

    The predictions it receives are lists of dicts with ``image_id`` (str), ``classes`` (K,) and
    ``cams`` (K, H, W) tensors or arrays (see :class:`rca_lightning.pseudo.cam_inference.CAMPredictor`).
    """

    def __init__(
        self,
        cams_dir: str | os.PathLike,
        dtype: str = "float16",
        compress: bool = False,
        seeds: str = "cams",
        attention_dir: str | os.PathLike | None = None,
        stride: int = 1,
    ) -> None:
        super().__init__(write_interval="batch")
        if dtype not in CAM_DTYPES:
            raise InvalidSetting(f"cam_dtype={dtype!r}: expected one of {list(CAM_DTYPES)}")
        if check_seed_kind(seeds) != "cams" and attention_dir is None:
            raise InvalidSetting(f"seeds={seeds} needs attention_dir=<folder of an attention accumulation>")
        self.cams_dir = Path(cams_dir)
        self.dtype = dtype
        self.compress = compress
        self.stride = number_in_range("cam_stride", stride, 1, MAX_CAM_STRIDE, integer=True)
        self.seeds = seeds
        self.attention_dir = None if attention_dir is None else Path(attention_dir)

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: list[dict],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for record in prediction:
            classes = np.asarray(record["classes"])
            cams = np.asarray(record["cams"], dtype=np.float32)  # (K, H, W)
            if self.seeds != "cams":
                attention = attention_maps(self.attention_dir, record["image_id"], classes, cams.shape[1:])
                cams = combine_seeds(self.seeds, cams, attention)
            save_cam_file(
                cam_path(self.cams_dir, record["image_id"]),
                classes,
                cams,
                dtype=self.dtype,
                compress=self.compress,
                stride=self.stride,
            )

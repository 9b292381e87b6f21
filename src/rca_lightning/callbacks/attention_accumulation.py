"""Online attention accumulation (OAA): each training image's class maps, max-accumulated across epochs.

Storage (one folder): ``attention.npy``, a uint8 ``(N, C, S, S)`` array opened as a memory map (row n is
dataset position n, the image's S x S grid squashed over the whole image), ``written.npy``, a bool
``(N, C)`` array marking the (image, class) maps written at least once, and ``index.json`` (image ids in
dataset order, class names, resolution, epochs done, ``complete`` once training ended). Rows are keyed by
dataset position, so shuffling and several processes give the same file. Under DDP every rank's maps are
gathered and rank zero alone writes, so ranks never collide (images the distributed sampler repeats are
max-combined like any other). Untouched rows stay as holes of a sparse file on disk. Checkpoints carry the
written maps, so a resumed run (even one killed mid-epoch) continues from exactly the checkpoint's state.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from rca_lightning.inference.cam_scores import peak_normalise
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.distributed import gather_padded_batch
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput

ATTENTION_FILE = "attention.npy"
WRITTEN_FILE = "written.npy"
INDEX_FILE = "index.json"
FORMAT_VERSION = 1
MAX_ATTENTION = 255.0
REQUIRED_BATCH_KEYS = ("labels", "index", "crop_box", "flipped")
REQUIRED_OUTPUT_KEYS = ("cams", "logits")
# Profiler actions (timed by the trainer's profiler, e.g. ``trainer.profiler=simple``).
GATHER_ACTION = "attention_accumulation/gather"
WRITE_ACTION = "attention_accumulation/write"


def normalise_attention(cams: torch.Tensor) -> torch.Tensor:
    """ReLU, then scale each (image, class) map so that its maximum is 255 (all-zero maps stay zero).

    Args:
        cams: (B, C, h, w) class activation maps.

    Returns:
        (B, C, h, w) float maps in [0, 255].
    """
    return peak_normalise(cams, eps=0.0) * MAX_ATTENTION


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


class AttentionAccumulationCallback(Callback):
    """Max-accumulates each training image's normalised class maps across epochs into a file on disk.

    From ``start_epoch`` on, after every training step and for every image of the batch and class it
    is tagged with whose probability ``sigmoid(logit)`` is at least ``min_probability``, the ReLU'd
    class map (``outputs["cams"]`` of ``training_step``), max-normalised to 0..255 at its own resolution,
    is pasted through the image's crop box into its S x S grid (bilinear), rounded to the nearest
    integer (as the public code's np.rint) and max-accumulated into the file. In
    the last epoch (``trainer.max_epochs - 1``) tagged classes never written before are written
    whatever their probability.

    Needs from each batch ``labels`` (B, C), ``index`` (B,) dataset positions, ``crop_box`` (B, 4) and
    ``flipped`` (B,) (``VOCSegmentationDataset`` items), and from ``training_step``'s returned dict
    ``cams`` (B, C, h, w) and ``logits`` (B, C). Under DDP each rank computes its batch's maps, the maps
    are gathered (padded to the train loader's batch size) and rank zero writes them all; only rank zero
    opens the file. The checkpoint state holds the written maps (``written`` (N, C) and the maps of its
    true entries, K x S x S bytes), so a resumed run recreates the file in ``output_dir`` exactly as it
    was when the checkpoint was written, whatever the interrupted run wrote afterwards.

    Args:
        output_dir: folder of the file (``${paths.output_dir}/attention`` in the config).
        start_epoch: first epoch (0-based) that accumulates (1 in the reference).
        resolution: side S of each stored map; the CAMs' own side (46 for uncropped 368 px images at output
            stride 8) stores them unresampled, like the public code.
        min_probability: classes with a lower predicted probability are skipped (0.1).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        start_epoch: int = 1,
        resolution: int = 32,
        min_probability: float = 0.1,
    ) -> None:
        super().__init__()
        if int(start_epoch) != start_epoch or start_epoch < 0:
            raise InvalidSetting(f"start_epoch: expected a non-negative integer, got {start_epoch!r}")
        if int(resolution) != resolution or resolution < 1:
            raise InvalidSetting(f"resolution: expected a positive integer, got {resolution!r}")
        if not 0.0 <= min_probability <= 1.0:
            raise InvalidSetting(f"min_probability: expected a value in [0, 1], got {min_probability!r}")
        self.output_dir = Path(output_dir)
        self.start_epoch = int(start_epoch)
        self.resolution = int(resolution)
        self.min_probability = float(min_probability)
        self.epochs_done = 0
        self._restored_maps: dict[str, torch.Tensor] | None = None  # from a checkpoint, until training starts
        self._attention: np.memmap | None = None  # (N, C, S, S) uint8
        self._written: np.memmap | None = None  # (N, C) bool

    # ------------------------------------------------------------------------------------------ storage
    def create_storage(self, image_ids: Sequence[str], class_names: Sequence[str]) -> None:
        """Create an all-zero file in ``output_dir`` for a dataset (overwriting an earlier one) and open it.

        Args:
            image_ids: the training images in dataset order (row n is dataset position n).
            class_names: the C foreground classes.
        """
        directory = self.output_dir
        directory.mkdir(parents=True, exist_ok=True)
        (directory / INDEX_FILE).unlink(missing_ok=True)  # no reader pairs an old index with new arrays
        num_images, num_classes = len(image_ids), len(class_names)
        shape = (num_images, num_classes, self.resolution, self.resolution)
        for name, dtype, array_shape in (
            (ATTENTION_FILE, np.uint8, shape),
            (WRITTEN_FILE, np.bool_, shape[:2]),
        ):
            np.lib.format.open_memmap(directory / name, mode="w+", dtype=dtype, shape=array_shape).flush()
        index = {
            "format_version": FORMAT_VERSION,
            "image_ids": list(image_ids),
            "class_names": list(class_names),
            "resolution": self.resolution,
            "start_epoch": self.start_epoch,
            "min_probability": self.min_probability,
            "epochs_done": self.epochs_done,
            "complete": False,
        }
        write_json_atomically(directory / INDEX_FILE, index)
        self.open_storage(directory)

    def open_storage(
        self,
        directory: str | os.PathLike | None = None,
        image_ids: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        """Open an existing file for writing, checking it fits the dataset.

        Args:
            directory: the file's folder (default ``output_dir``).
            image_ids: when given, must equal the file's image ids.
            class_names: when given, must equal the file's class names.
        """
        directory = Path(directory) if directory is not None else self.output_dir
        index = _read_index(directory)
        index_path = directory / INDEX_FILE
        if index["resolution"] != self.resolution:
            raise InvalidData(
                f"{index_path}: resolution {index['resolution']}, expected the callback's {self.resolution}"
            )
        if image_ids is not None and list(image_ids) != index["image_ids"]:
            raise InvalidData(
                f"{index_path}: {len(index['image_ids'])} image ids that differ from the training dataset's "
                f"{len(image_ids)} (another split?); expected the same ids in the same order"
            )
        if class_names is not None and list(class_names) != index["class_names"]:
            raise InvalidData(
                f"{index_path}: class names {index['class_names']}, expected {list(class_names)}"
            )
        self._attention = np.lib.format.open_memmap(directory / ATTENTION_FILE, mode="r+")
        self._written = np.lib.format.open_memmap(directory / WRITTEN_FILE, mode="r+")
        expected = (len(index["image_ids"]), len(index["class_names"]), self.resolution, self.resolution)
        if self._attention.shape != expected or self._written.shape != expected[:2]:
            raise InvalidData(
                f"{directory / ATTENTION_FILE}: shape {self._attention.shape}, expected {expected}"
            )

    def flush(self) -> None:
        """Write this process's changes to disk."""
        if self._attention is not None:
            self._attention.flush()
            self._written.flush()

    def _update_index(self, **changes) -> None:
        index = json.loads((self.output_dir / INDEX_FILE).read_text())
        write_json_atomically(self.output_dir / INDEX_FILE, {**index, **changes})

    def _restore_maps(self, restored: dict[str, torch.Tensor]) -> None:
        """Write a checkpoint's maps into the freshly created (all-zero) file."""
        written = restored["written"].numpy()  # (N, C)
        if written.shape != self._written.shape:
            raise InvalidData(
                f"AttentionAccumulationCallback: the checkpoint's maps are for {tuple(written.shape)} "
                f"(images, classes), expected the training dataset's {tuple(self._written.shape)}"
            )
        rows, classes = np.nonzero(written)
        self._attention[rows, classes] = restored["maps"].numpy()
        self._written[:] = written
        self.flush()

    # ------------------------------------------------------------------------------------- accumulation
    @torch.no_grad()
    def batch_contributions(
        self,
        indices: torch.Tensor,
        cams: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        crop_boxes: torch.Tensor,
        flipped: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One batch's candidate maps, computed where the batch is (any rank); ``write`` stores them.

        Args:
            indices: (B,) dataset positions of the images.
            cams: (B, C, h, w) class maps of the augmented images.
            logits: (B, C) class scores.
            labels: (B, C) multi-hot image labels.
            crop_boxes: (B, 4) crop windows in normalised image coordinates.
            flipped: (B,) bool, mirrored after the crop.

        Returns:
            ``rows`` (B,) long, ``maps`` (B, C, S, S) uint8 (pasted, rounded, zero for untagged classes),
            ``tagged`` (B, C) bool and ``confident`` (B, C) bool (``sigmoid(logit) >= min_probability``).
        """
        tagged = labels > 0  # (B, C)
        confident = torch.sigmoid(logits.detach().float()) >= self.min_probability  # (B, C)
        maps = paste_crops_into_image_grid(
            normalise_attention(cams.detach()),
            crop_boxes.to(cams.device),
            flipped.to(cams.device),
            self.resolution,
        )  # (B, C, S, S)
        maps = maps.round().clamp_(0, MAX_ATTENTION) * tagged.to(maps.device)[:, :, None, None]
        return {
            "rows": indices.detach().long(),
            "maps": maps.to(torch.uint8),
            "tagged": tagged.to(maps.device),
            "confident": confident.to(maps.device),
        }

    def write(
        self,
        rows: torch.Tensor,
        maps: torch.Tensor,
        tagged: torch.Tensor,
        confident: torch.Tensor,
        write_missing: bool = False,
    ) -> None:
        """Max-accumulate contributions (of one batch, or of every rank's batches) into the open file.

        Args:
            rows: (B,) dataset positions; an image may appear several times (its maps are max-combined).
            maps: (B, C, S, S) uint8 maps.
            tagged: (B, C) bool, the image's tags (only tagged classes are written).
            confident: (B, C) bool, the class passed the probability gate.
            write_missing: also write tagged classes never written before, whatever their probability.
        """
        if self._attention is None:
            raise ValueError(
                "AttentionAccumulationCallback: no open file; call create_storage or open_storage"
            )
        rows, tagged = rows.cpu(), tagged.cpu()
        selected = tagged & confident.cpu()  # (B, C)
        if write_missing:
            selected |= tagged & ~torch.from_numpy(self._written[rows.numpy()])
        keep = selected.any(dim=1)  # (B,) images with something to write
        if not bool(keep.any()):
            return
        selected, rows = selected[keep], rows[keep]  # (K, C), (K,)
        contributions = maps.cpu()[keep] * selected[:, :, None, None]  # (K, C, S, S)
        # One image several times (in a batch, or on several ranks): combine first, write the row once.
        unique_rows, inverse = torch.unique(rows, return_inverse=True)  # (U,), (K,)
        combined = torch.zeros(
            (len(unique_rows), *contributions.shape[1:]), dtype=torch.uint8
        ).scatter_reduce_(
            0, inverse[:, None, None, None].expand_as(contributions), contributions, "amax"
        )  # (U, C, S, S)
        combined_selected = torch.zeros(len(unique_rows), selected.shape[1], dtype=torch.long)
        combined_selected = combined_selected.index_add_(0, inverse, selected.long()) > 0  # (U, C)
        row_numbers = unique_rows.numpy()
        current = self._attention[row_numbers]  # (U, C, S, S) copy
        np.maximum(current, combined.numpy(), out=current)
        self._attention[row_numbers] = current
        self._written[row_numbers] = self._written[row_numbers] | combined_selected.numpy()

    def accumulate(
        self,
        indices: torch.Tensor,
        cams: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        crop_boxes: torch.Tensor,
        flipped: torch.Tensor,
        write_missing: bool = False,
    ) -> None:
        """Max-accumulate one batch's maps into the open file (one process: ``batch_contributions`` +
        ``write``; see those for the arguments)."""
        self.write(
            **self.batch_contributions(indices, cams, logits, labels, crop_boxes, flipped),
            write_missing=write_missing,
        )

    @staticmethod
    def gather_contributions(
        trainer: Trainer, pl_module: LightningModule, contributions: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Every rank's contributions, each padded to the train loader's batch size, rank-major.

        Padded images are neither tagged nor confident, so they write nothing.
        """
        owner = "AttentionAccumulationCallback"
        rows = contributions["rows"].to(contributions["maps"].device)
        # (B, 1 + 2C) int64: dataset position, tags, gate; one collective for these, one for the maps.
        meta = torch.cat(
            [rows[:, None], contributions["tagged"].long(), contributions["confident"].long()], 1
        )
        meta = gather_padded_batch(trainer, pl_module, meta, owner)  # (W * B_max, 1 + 2C)
        maps = gather_padded_batch(trainer, pl_module, contributions["maps"], owner)  # (W * B_max, C, S, S)
        num_classes = contributions["tagged"].shape[1]
        return {
            "rows": meta[:, 0],
            "maps": maps,
            "tagged": meta[:, 1 : 1 + num_classes] > 0,
            "confident": meta[:, 1 + num_classes :] > 0,
        }

    # ------------------------------------------------------------------------------------------- hooks
    def _is_last_epoch(self, trainer: Trainer) -> bool:
        max_epochs = trainer.max_epochs
        return max_epochs is not None and max_epochs > 0 and trainer.current_epoch >= max_epochs - 1

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        image_ids = getattr(dataset, "image_ids", None)
        class_names = getattr(dataset, "class_names", None)
        if image_ids is None or class_names is None:
            raise ValueError(
                "AttentionAccumulationCallback: expected one train DataLoader whose dataset has image_ids "
                "and class_names (e.g. VOCSegmentationDataset)"
            )
        max_epochs = trainer.max_epochs
        if max_epochs is not None and 0 < max_epochs <= self.start_epoch:
            rank_zero_warn(
                f"AttentionAccumulationCallback: start_epoch={self.start_epoch} but max_epochs={max_epochs}; "
                "nothing will be accumulated"
            )
        self.epochs_done = trainer.current_epoch  # epochs completed before this (possibly resumed) run
        if trainer.is_global_zero:
            self.create_storage(image_ids, class_names)
            if self._restored_maps is not None:
                self._restore_maps(self._restored_maps)
        self._restored_maps = None

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if trainer.current_epoch < self.start_epoch:
            return
        missing = [key for key in REQUIRED_OUTPUT_KEYS if not isinstance(outputs, dict) or key not in outputs]
        missing += [key for key in REQUIRED_BATCH_KEYS if key not in batch]
        if missing:
            raise ValueError(
                f"AttentionAccumulationCallback: training_step outputs / batch lack {missing}; expected "
                f"outputs {list(REQUIRED_OUTPUT_KEYS)} and batch keys {list(REQUIRED_BATCH_KEYS)}"
            )
        contributions = self.batch_contributions(
            batch["index"],
            outputs["cams"],
            outputs["logits"],
            batch["labels"],
            batch["crop_box"],
            batch["flipped"],
        )
        if trainer.world_size > 1:
            with trainer.profiler.profile(GATHER_ACTION):
                contributions = self.gather_contributions(trainer, pl_module, contributions)
        if trainer.is_global_zero:
            with trainer.profiler.profile(WRITE_ACTION):
                self.write(**contributions, write_missing=self._is_last_epoch(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs_done = trainer.current_epoch + 1
        if trainer.is_global_zero:
            self.flush()
            self._update_index(epochs_done=self.epochs_done)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.flush()
            self._update_index(epochs_done=self.epochs_done, complete=True)

    def state_dict(self) -> dict:
        state: dict = {"resolution": self.resolution}
        if self._attention is not None:  # rank zero, whose checkpoint is the one saved
            self.flush()
            written = np.array(self._written)  # (N, C)
            rows, classes = np.nonzero(written)
            state["written"] = torch.from_numpy(written)
            maps = np.ascontiguousarray(self._attention[rows, classes])  # (K, S, S)
            state["maps"] = torch.from_numpy(maps)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("resolution", self.resolution) != self.resolution:
            raise InvalidData(
                f"AttentionAccumulationCallback: the checkpoint's resolution is {state_dict['resolution']}, "
                f"expected the callback's {self.resolution}"
            )
        if "written" not in state_dict:
            raise InvalidData(
                "AttentionAccumulationCallback: the checkpoint holds no accumulated maps (written by an "
                "older version); expected 'written' and 'maps' in its callback state"
            )
        self._restored_maps = {"written": state_dict["written"], "maps": state_dict["maps"]}


# ------------------------------------------------------------------------------------------------ readers
def _read_index(directory: Path) -> dict:
    index_path = Path(directory) / INDEX_FILE
    if not index_path.is_file():
        raise MissingInput(f"{index_path} not found: expected an attention-accumulation folder")
    try:
        index = json.loads(index_path.read_text())
    except ValueError as error:
        raise InvalidData(f"{index_path}: not valid JSON ({error})") from error
    if index.get("format_version") != FORMAT_VERSION:
        raise InvalidData(
            f"{index_path}: format_version {index.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    return index


@functools.lru_cache(maxsize=4)
def _cached_index(index_path: str, modified_ns: int) -> tuple[dict, dict[str, int]]:
    index = _read_index(Path(index_path).parent)
    return index, {image_id: row for row, image_id in enumerate(index["image_ids"])}


def _index_and_rows(directory: Path) -> tuple[dict, dict[str, int]]:
    index_path = Path(directory) / INDEX_FILE
    if not index_path.is_file():
        raise MissingInput(f"{index_path} not found: expected an attention-accumulation folder")
    return _cached_index(str(index_path.resolve()), index_path.stat().st_mtime_ns)


def load_accumulated_attention(
    directory: str | os.PathLike, require_complete: bool = True
) -> tuple[list[str], list[str], np.ndarray]:
    """Open an accumulation folder read-only.

    Args:
        directory: the callback's folder.
        require_complete: raise unless the training run that wrote it ended.

    Returns:
        (image ids in row order, class names, read-only memory-mapped uint8 (N, C, S, S) array).
    """
    directory = Path(directory)
    index, _ = _index_and_rows(directory)
    if require_complete and not index["complete"]:
        raise InvalidData(
            f"{directory / INDEX_FILE}: complete is false (training did not finish writing it); expected true"
        )
    attention = np.load(directory / ATTENTION_FILE, mmap_mode="r")
    return list(index["image_ids"]), list(index["class_names"]), attention


def attention_seed(
    directory: str | os.PathLike, image_id: str, size: tuple[int, int], require_complete: bool = True
) -> torch.Tensor:
    """One image's accumulated maps as seeds, resized (bilinear) to the image size.

    Args:
        directory: the callback's folder.
        image_id: the image.
        size: (H, W) of the output.
        require_complete: raise unless the training run that wrote it ended.

    Returns:
        (C, H, W) float32 in [0, 1]; classes never written are all zero.
    """
    directory = Path(directory)
    _, _, attention = load_accumulated_attention(directory, require_complete)
    _, rows = _index_and_rows(directory)
    if image_id not in rows:
        raise InvalidData(
            f"{directory / INDEX_FILE}: no image {image_id!r} among {len(rows)} accumulated images"
        )
    maps = torch.from_numpy(np.array(attention[rows[image_id]], np.float32))  # (C, S, S)
    resized = F.interpolate(maps[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return (resized / MAX_ATTENTION).clamp_(0.0, 1.0)


__all__ = [
    "AttentionAccumulationCallback",
    "attention_seed",
    "load_accumulated_attention",
    "normalise_attention",
    "paste_crops_into_image_grid",
]

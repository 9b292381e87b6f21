"""Online attention accumulation (OAA): each training image's class maps, max-accumulated across epochs.

The maps live in an :class:`~rca_lightning.pseudo.attention_store.AttentionStore` (one folder, row n =
dataset position n, so shuffling and several processes give the same file). Under DDP every rank's maps
are gathered and rank zero alone writes, so ranks never collide (images the distributed sampler repeats
are max-combined like any other). Checkpoints carry the written maps, so a resumed run (even one killed
mid-epoch) continues from exactly the checkpoint's state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from rca_lightning.imaging.crop_grid import paste_crops_into_image_grid
from rca_lightning.pseudo.attention_store import MAX_ATTENTION, SEED_NORMALISATIONS, AttentionStore
from rca_lightning.pseudo.cam_scores import peak_normalise
from rca_lightning.utils.distributed import gather_padded_batch
from rca_lightning.utils.errors import InvalidData, InvalidSetting

REQUIRED_BATCH_KEYS = ("labels", "index", "crop_box", "flipped")
REQUIRED_OUTPUT_KEYS = ("cams", "logits")
# Profiler actions of the DDP gather and of rank zero's write.
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
        seed_normalisation: how the stages read the maps as seeds, recorded in the store's index (one of
            :data:`~rca_lightning.pseudo.attention_store.SEED_NORMALISATIONS`): ``divide_255`` (255 -> 1) or
            ``min_max`` (the release's per image and class ``(a - min) / (max - min + 1e-8)``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        start_epoch: int = 1,
        resolution: int = 32,
        min_probability: float = 0.1,
        seed_normalisation: str = "divide_255",
    ) -> None:
        super().__init__()
        if int(start_epoch) != start_epoch or start_epoch < 0:
            raise InvalidSetting(f"start_epoch: expected a non-negative integer, got {start_epoch!r}")
        if int(resolution) != resolution or resolution < 1:
            raise InvalidSetting(f"resolution: expected a positive integer, got {resolution!r}")
        if not 0.0 <= min_probability <= 1.0:
            raise InvalidSetting(f"min_probability: expected a value in [0, 1], got {min_probability!r}")
        if seed_normalisation not in SEED_NORMALISATIONS:
            raise InvalidSetting(
                f"callbacks.attention_accumulation.seed_normalisation={seed_normalisation!r}: "
                f"expected one of {list(SEED_NORMALISATIONS)}"
            )
        self.output_dir = Path(output_dir)
        self.start_epoch = int(start_epoch)
        self.resolution = int(resolution)
        self.min_probability = float(min_probability)
        self.seed_normalisation = seed_normalisation
        self.epochs_done = 0
        self._restored_maps: dict[str, torch.Tensor] | None = None  # from a checkpoint, until training starts
        self._store: AttentionStore | None = None  # open on rank zero while training

    # ------------------------------------------------------------------------------------------ storage
    def create_storage(self, image_ids: Sequence[str], class_names: Sequence[str]) -> None:
        """Create an all-zero store in ``output_dir`` for a dataset (replacing an earlier one) and open it."""
        settings = {
            "start_epoch": self.start_epoch,
            "min_probability": self.min_probability,
            "seed_normalisation": self.seed_normalisation,
            "epochs_done": self.epochs_done,
        }
        self._store = AttentionStore.create(
            self.output_dir, image_ids, class_names, self.resolution, settings
        )

    def open_storage(
        self,
        directory: str | os.PathLike | None = None,
        image_ids: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        """Open an existing store (default ``output_dir``) for writing, checking it fits the dataset."""
        folder = Path(directory) if directory is not None else self.output_dir
        self._store = AttentionStore.open(folder, self.resolution, image_ids, class_names)

    def flush(self) -> None:
        """Write this process's changes to disk."""
        if self._store is not None:
            self._store.flush()

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
        if self._store is None:
            raise ValueError(
                "AttentionAccumulationCallback: no open store; call create_storage or open_storage"
            )
        rows, tagged = rows.cpu(), tagged.cpu()
        selected = tagged & confident.cpu()  # (B, C)
        if write_missing:
            selected |= tagged & ~torch.from_numpy(self._store.written[rows.numpy()])
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
        self._store.max_into_rows(unique_rows.numpy(), combined.numpy(), combined_selected.numpy())

    def accumulate(self, batch: dict[str, torch.Tensor], write_missing: bool = False) -> None:
        """Max-accumulate one batch's maps into the open file, in one process: ``batch`` holds the arguments
        of :meth:`batch_contributions` by name, then :meth:`write`."""
        self.write(**self.batch_contributions(**batch), write_missing=write_missing)

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
                self._store.restore(
                    self._restored_maps["written"].numpy(), self._restored_maps["maps"].numpy()
                )
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
            self._store.update_index(epochs_done=self.epochs_done)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.flush()
            self._store.update_index(epochs_done=self.epochs_done, complete=True)

    def state_dict(self) -> dict:
        state: dict = {"resolution": self.resolution}
        if self._store is not None:  # rank zero, whose checkpoint is the one saved
            written, maps = self._store.written_maps()  # (N, C), (K, S, S)
            state["written"] = torch.from_numpy(written)
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


__all__ = ["AttentionAccumulationCallback", "normalise_attention"]

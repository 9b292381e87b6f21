"""Callback that drives the regional memory bank's life cycle during training."""

import torch
from lightning import Callback, LightningModule, Trainer

from rca_lightning.utils.distributed import gather_padded_batch

# Profiler actions (timed by the trainer's profiler, e.g. ``trainer.profiler=simple``).
GATHER_ACTION = "memory_bank/gather"
ENQUEUE_ACTION = "memory_bank/enqueue"
PROTOTYPES_ACTION = "memory_bank/prototypes"


class MemoryBankCallback(Callback):
    """Enqueues confident region embeddings, refreshes prototypes, switches the contrast on, logs fill.

    The bank's state stays in ``pl_module.memory_bank``'s buffers (checkpointed with the model). Under DDP:

    * every step, each rank packs its region embeddings and confidence mask into one (B, C, D + 1) tensor,
      pads B to the train loader's batch size (padded images are not confident) and ``all_gather``s it;
      every rank then enqueues the same entries in the same (rank-major) order, so the banks stay
      identical. (The DDP trainer configs turn off DDP's broadcast of rank zero's buffers before every
      forward, ``forward_sync_buffers: false``, so this gather is what keeps them in step.)
    * at an epoch start, rank zero runs the k-means and broadcasts the prototypes, so every rank
      aggregates over the same centres even where device kernels are not bitwise reproducible.

    A run resumed mid-epoch keeps the checkpoint's prototypes (Lightning does not repeat the epoch start).

    Args:
        contrast_start_epoch: first epoch (0-based) with the contrast term (2 in the public code).
        prototype_start_epoch: first epoch whose start recomputes the k-means prototypes (1).
        log_fill: log each class's fraction of written slots at every epoch end.
    """

    def __init__(self, contrast_start_epoch: int = 2, prototype_start_epoch: int = 1, log_fill: bool = True):
        super().__init__()
        self.contrast_start_epoch = contrast_start_epoch
        self.prototype_start_epoch = prototype_start_epoch
        self.log_fill = log_fill

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A run resumed mid-epoch gets no on_train_epoch_start for that epoch (its prototypes come from the
        # checkpoint), so the contrast switch is set here too.
        pl_module.contrast_active = trainer.current_epoch >= self.contrast_start_epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        pl_module.contrast_active = epoch >= self.contrast_start_epoch
        if epoch < self.prototype_start_epoch:
            return
        bank = pl_module.memory_bank
        if trainer.is_global_zero:
            with trainer.profiler.profile(PROTOTYPES_ACTION):
                bank.refresh_prototypes(seed_offset=epoch)
        if trainer.world_size > 1:
            prototypes, valid = trainer.strategy.broadcast(
                (bank.prototypes.cpu(), bank.prototype_valid.cpu()), src=0
            )
            bank.prototypes.copy_(prototypes)
            bank.prototype_valid.copy_(valid)

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx
    ) -> None:
        if not isinstance(outputs, dict) or "region_embeddings" not in outputs:
            return
        embeddings = outputs["region_embeddings"]  # (B, C, D)
        confident = outputs["region_confident"]  # (B, C)
        if trainer.world_size > 1:
            with trainer.profiler.profile(GATHER_ACTION):
                embeddings, confident = self.gather_regions(trainer, pl_module, embeddings, confident)
        with trainer.profiler.profile(ENQUEUE_ACTION):
            image_index, class_index = confident.nonzero(as_tuple=True)
            pl_module.memory_bank.enqueue(embeddings[image_index, class_index], class_index)

    @staticmethod
    def gather_regions(
        trainer: Trainer, pl_module: LightningModule, embeddings: torch.Tensor, confident: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's regions, padded to one size and concatenated rank-major (one collective).

        Args:
            trainer: the running trainer (its train loader's batch size is the padded size).
            pl_module: the module whose ``all_gather`` is used.
            embeddings: (B, C, D) this rank's region embeddings.
            confident: (B, C) bool, which of them enter the bank.

        Returns:
            (W * B_max, C, D) float32 embeddings and (W * B_max, C) bool confidence; padded images are
            never confident.
        """
        packed = torch.cat([embeddings.float(), confident.float().unsqueeze(-1)], dim=-1)  # (B, C, D + 1)
        gathered = gather_padded_batch(
            trainer, pl_module, packed, "MemoryBankCallback"
        )  # (W * B_max, C, D + 1)
        return gathered[..., :-1], gathered[..., -1] > 0.5

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.log_fill or not pl_module.uses_memory_bank:
            return
        fill = pl_module.memory_bank.fill_fraction()
        names = getattr(pl_module, "class_names", None) or [str(c) for c in range(len(fill))]
        pl_module.log_dict({f"memory/fill_{name}": value for name, value in zip(names, fill, strict=True)})
        pl_module.log("memory/fill_mean", fill.mean())

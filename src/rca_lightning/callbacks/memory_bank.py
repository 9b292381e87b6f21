"""Callback that drives the regional memory bank's life cycle during training."""

import torch
from lightning import Callback, LightningModule, Trainer


class MemoryBankCallback(Callback):
    """Enqueues confident region embeddings, refreshes prototypes, switches the contrast on, logs fill.

    The bank's state stays in ``pl_module.memory_bank``'s buffers; this callback holds only settings.
    Under DDP the (fixed-size, masked) region embeddings of every rank are gathered before the update,
    so every rank applies the same entries in the same order and the banks stay identical.

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

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        pl_module.contrast_active = epoch >= self.contrast_start_epoch
        if epoch >= self.prototype_start_epoch:
            pl_module.memory_bank.refresh_prototypes(seed_offset=epoch)

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx
    ) -> None:
        if not isinstance(outputs, dict) or "region_embeddings" not in outputs:
            return
        embeddings = outputs["region_embeddings"]  # (B, C, D)
        confident = outputs["region_confident"]  # (B, C)
        if trainer.world_size > 1:
            # (W, B, C, D) -> (W*B, C, D), rank-major: the same order on every rank.
            embeddings = pl_module.all_gather(embeddings).flatten(0, 1)
            confident = pl_module.all_gather(confident).flatten(0, 1)
        image_index, class_index = confident.nonzero(as_tuple=True)
        pl_module.memory_bank.enqueue(embeddings[image_index, class_index], class_index)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.log_fill or not pl_module.uses_memory_bank:
            return
        fill = pl_module.memory_bank.fill_fraction()
        names = getattr(pl_module, "class_names", None) or [str(c) for c in range(len(fill))]
        pl_module.log_dict({f"memory/fill_{name}": value for name, value in zip(names, fill, strict=True)})
        pl_module.log("memory/fill_mean", fill.mean())

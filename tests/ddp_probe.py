"""Test helper callback (put into `rca-train` runs by a Hydra override): what each rank saw and held."""

from pathlib import Path

import torch
from lightning import Callback


class RankProbeCallback(Callback):
    """Records, per rank, the confident regions and the images of its own batches, and saves them with the
    rank's memory bank to ``<output_dir>/rank<r>.pt`` when training ends."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.confident_per_class: torch.Tensor | None = None
        self.train_indices: dict[int, list[int]] = {}
        self.val_indices: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        confident = outputs["region_confident"].sum(dim=0).cpu()  # (C,)
        self.confident_per_class = (
            confident if self.confident_per_class is None else self.confident_per_class + confident
        )
        self.train_indices.setdefault(trainer.current_epoch, []).extend(batch["index"].tolist())

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if trainer.current_epoch == 0:
            self.val_indices.extend(batch["index"].tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "bank": {name: value.cpu() for name, value in pl_module.memory_bank.state_dict().items()},
                "confident_per_class": self.confident_per_class,
                "train_indices": self.train_indices,
                "val_indices": self.val_indices,
                "world_size": trainer.world_size,
                "forward_sync_buffers": trainer.strategy.model.forward_sync_buffers,  # DDP's
            },
            self.output_dir / f"rank{trainer.global_rank}.pt",
        )

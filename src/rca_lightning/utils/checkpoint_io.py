"""Checkpoint files written atomically in their own folder and read without unpickling code."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rca_lightning.utils.atomic import atomic_output
from rca_lightning.utils.safe_loading import load_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local checkpoints appear whole or not at all, and load as weights only.

    Lightning's own writer serialises the checkpoint into memory, writes it to a file in the system's
    temporary folder and moves that into place, which is a copy (not a rename) whenever the temporary
    folder is on another file system, and needs the checkpoint's size twice in memory. This writer streams
    ``torch.save`` into a temporary file in the checkpoint's folder, flushes it to disk and renames it over
    the target (``os.replace``), so a run killed while saving leaves the previous checkpoint intact and no
    partial file under the checkpoint's name. Remote URLs (``s3://`` ...) go through Lightning's writer.

    Every checkpoint the trainer reads (``fit`` / ``test`` / ``predict`` with ``ckpt_path``) is loaded with
    ``weights_only=True`` whatever Lightning's version defaults to (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    included): local files through ``safe_loading.load_checkpoint``, remote ones through Lightning's reader.
    There is no way around it: a checkpoint that needs a full unpickling is refused.
    Plugged in with ``Trainer(plugins=[AtomicCheckpointIO()])`` (``trainer.plugins`` in the config).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO: storage_options is not supported for local path {path}")
        with atomic_output(Path(path)) as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | None = lambda storage, location: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return load_checkpoint(path, map_location)


__all__ = ["AtomicCheckpointIO"]

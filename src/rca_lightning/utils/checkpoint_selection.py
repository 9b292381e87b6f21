"""Which checkpoint of a trained stage is used, and whether pixel labels chose it.

Weak supervision means no pixel label chooses anything, so every stage uses the weights of its last epoch
unless the user asks otherwise (``checkpoint=<selection>`` on ``rca-train`` / ``rca-seg``):

| selection | stage | chosen by |
|---|---|---|
| ``last`` | both (the default) | nothing: the final weights |
| ``best_map`` | classifier | val multilabel mAP (image tags only) |
| ``best_cam_miou`` | classifier | val CAM mIoU (pixel labels: explicit only) |
| ``best_val_miou`` | segmentation | val mIoU (pixel labels: explicit only) |

``val/mAP`` is the mean AP of the classes with a tagged val image (a class without one has no AP and is left
out, as mIoU leaves out absent classes); with no tagged val image at all it is not logged, and ``best_map``
stops with Lightning's error that the checkpoint finds no ``val/mAP`` to monitor.

The monitored ``ModelCheckpoint`` of ``callbacks/model_checkpoint.yaml`` takes its ``monitor`` and
``save_top_k`` from here through the ``${checkpoint_monitor:...}`` and ``${checkpoint_top_k:...}``
resolvers: with ``last`` it keeps no file (``last.ckpt``, written every epoch, is the one used).
"""

from __future__ import annotations

from pathlib import Path

from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from rca_lightning.utils.errors import InvalidSetting, MissingInput

MONITORS: dict[str, str | None] = {
    "last": None,
    "best_map": "val/mAP",
    "best_cam_miou": "val/cam_mIoU",
    "best_val_miou": "val/seg_mIoU",
}
USES_PIXEL_LABELS = frozenset({"best_cam_miou", "best_val_miou"})
LAST_CHECKPOINT_NAME = "last.ckpt"
# The ckpt_path values Lightning's trainer resolves itself instead of reading a file of that name.
LIGHTNING_CHECKPOINT_NAMES = frozenset({"last", "best", "hpc", "registry"})


def check_selection(selection: str) -> str:
    """``selection`` if it is one of :data:`MONITORS`, else InvalidSetting naming the setting."""
    if selection not in MONITORS:
        raise InvalidSetting(f"checkpoint={selection!r}: expected one of {list(MONITORS)}")
    return selection


def check_checkpoint_file(ckpt_path: str | None, stage: str) -> None:
    """MissingInput unless ``ckpt_path`` (a stage's resume / evaluate file) is None, a file, a remote URL or
    one of Lightning's names (``last``, ``best``, ``hpc``, ``registry``...), before anything is built."""
    if not ckpt_path or "://" in str(ckpt_path) or str(ckpt_path) in LIGHTNING_CHECKPOINT_NAMES:
        return
    if str(ckpt_path).startswith("registry:") or Path(ckpt_path).is_file():
        return
    raise MissingInput(f"ckpt_path={ckpt_path} not found: expected a checkpoint file written by {stage}")


def checkpoint_monitor(selection: str) -> str | None:
    """The metric the monitored checkpoint tracks for ``selection`` (None for ``last``)."""
    return MONITORS[check_selection(selection)]


def checkpoint_top_k(selection: str) -> int:
    """How many monitored checkpoints to keep: 1, or 0 for ``last`` (no monitored file at all)."""
    return 0 if checkpoint_monitor(selection) is None else 1


def uses_pixel_labels(selection: str | None) -> bool:
    """Whether a checkpoint chosen by ``selection`` was chosen with pixel labels."""
    return selection in USES_PIXEL_LABELS


def selected_checkpoint(trainer: Trainer, selection: str) -> tuple[str | None, float | None]:
    """The checkpoint file ``selection`` picks after ``trainer.fit``, and its monitored score.

    ``last``: the ``last.ckpt`` the unmonitored checkpoint callback rewrites at every epoch end (None when
    the trainer has no such callback). ``best_*``: the best file of the callback monitoring that metric.

    Returns:
        (path or None, score or None).
    """
    monitor = checkpoint_monitor(selection)
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    if monitor is None:
        for callback in callbacks:
            if callback.monitor is None and callback.best_model_path:
                if Path(callback.best_model_path).name == LAST_CHECKPOINT_NAME:
                    return callback.best_model_path, None
        return None, None
    for callback in callbacks:
        if callback.monitor == monitor and callback.best_model_path:
            score = callback.best_model_score
            return callback.best_model_path, None if score is None else float(score)
    raise InvalidSetting(
        f"checkpoint={selection}: no checkpoint monitoring {monitor} was saved; expected a validation run "
        "(trainer.limit_val_batches > 0) and callbacks.model_checkpoint"
    )


__all__ = [
    "MONITORS",
    "check_checkpoint_file",
    "check_selection",
    "checkpoint_monitor",
    "checkpoint_top_k",
    "selected_checkpoint",
    "uses_pixel_labels",
]

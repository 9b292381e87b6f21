"""Plumbing every layer uses: user errors, atomic writes and folder locks, safe loading, setting checks,
DDP and rank helpers, logger helpers, Hydra resolvers. Imports no other rca_lightning package."""

from rca_lightning.utils.checkpoint_io import AtomicCheckpointIO
from rca_lightning.utils.settings_check import SettingsCheck

__all__ = ["AtomicCheckpointIO", "SettingsCheck"]

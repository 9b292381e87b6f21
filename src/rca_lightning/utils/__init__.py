"""Plumbing every layer uses: user errors, atomic writes, safe loading, the settings check, DDP helpers."""

from rca_lightning.utils.checkpoint_io import AtomicCheckpointIO
from rca_lightning.utils.settings_check import SettingsCheck

__all__ = ["AtomicCheckpointIO", "SettingsCheck"]

"""Plumbing every layer uses: user errors, atomic writes and folder locks, safe loading, setting checks,
DDP and rank helpers, logger helpers, Hydra resolvers. Imports no other rca_lightning package."""

from rca_lightning.utils.lazy_exports import lazy_exports

# Each public name (a config target) -> the module that defines it, imported on first use: a module that
# needs one piece of plumbing (the console's user errors) does not import Lightning with it.
_HOMES = {
    "AtomicCheckpointIO": "rca_lightning.utils.checkpoint_io",
    "SettingsCheck": "rca_lightning.utils.settings_check",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

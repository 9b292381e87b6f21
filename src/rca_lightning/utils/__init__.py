"""Plumbing every layer uses: user errors, atomic writes and folder locks, safe loading, setting checks,
DDP and rank helpers, logger helpers, Hydra resolvers. Imports no other rca_lightning package.

The two names below (config targets) are imported on first use: a module that needs one piece of plumbing
(the console's user errors) does not import Lightning with it."""

from importlib import import_module

# Each public name -> the module that defines it.
_HOMES = {
    "AtomicCheckpointIO": "rca_lightning.utils.checkpoint_io",
    "SettingsCheck": "rca_lightning.utils.settings_check",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'rca_lightning.utils' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)

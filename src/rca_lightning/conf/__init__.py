"""Packaged Hydra configs (the top-level conf/ links here)."""

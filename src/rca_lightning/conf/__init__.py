"""Packaged Hydra configs: one YAML per console script and the config groups (data, model, trainer, ...).
No Python code; the top-level conf/ links here."""

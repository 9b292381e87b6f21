"""OmegaConf resolvers used by the packaged configs."""

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Register ``${len:...}`` (length of a list, e.g. the number of class names). Idempotent."""
    if not OmegaConf.has_resolver("len"):
        OmegaConf.register_new_resolver("len", len)

"""OmegaConf resolvers used by the packaged configs."""

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

from rca_lightning.utils.checkpoint_selection import checkpoint_monitor, checkpoint_top_k
from rca_lightning.utils.network import server_reachable
from rca_lightning.utils.ranks import launch_id

WANDB_DEFAULT_URL = "https://api.wandb.ai"
# How long the wandb logger waits for its server before it runs offline.
WANDB_CONNECT_TIMEOUT_S = 3.0


def wandb_api_key_available() -> bool:
    """Whether wandb would find an API key: ``WANDB_API_KEY``, or the netrc entry ``wandb login`` writes
    for the server (``WANDB_BASE_URL``, default api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", WANDB_DEFAULT_URL)).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_offline() -> bool:
    """Whether the wandb logger is told to run offline: exactly when there is no API key
    (:func:`wandb_api_key_available`) or no way to the server, unless the user set ``WANDB_MODE``: then
    false, and wandb runs as that says (Lightning's logger would overwrite it when told offline)."""
    if os.environ.get("WANDB_MODE"):
        return False
    server = os.environ.get("WANDB_BASE_URL", WANDB_DEFAULT_URL)
    return not wandb_api_key_available() or not server_reachable(server, WANDB_CONNECT_TIMEOUT_S)


def sqlite_url(path: str) -> str:
    """``sqlite:///<absolute path>`` of a database file, creating its folder (SQLite makes only the file)."""
    database = Path(path).expanduser().resolve()
    database.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{database}"


def cpus_at_most(count: int) -> int:
    """``count``, or fewer when this machine has fewer CPUs (loader workers beyond the CPUs only contend)."""
    return max(0, min(int(count), os.cpu_count() or 1))


def register_resolvers() -> None:
    """Register ``${len:...}`` (length of a list, e.g. the number of class names), ``${wandb_offline:}``
    (:func:`wandb_offline`) and ``${sqlite_url:path}``
    (an SQLite URL whose folder exists, for Optuna's storage), ``${checkpoint_monitor:selection}`` and
    ``${checkpoint_top_k:selection}`` (the monitored checkpoint of a ``checkpoint=`` choice) and
    ``${cpus_at_most:n}`` (n, capped at the CPU count) and ``${launch_id:}`` (a name of this launch that no
    other launch running now has: two runs started in the same second get run folders of their own).
    Idempotent."""
    resolvers = {
        "len": len,
        "wandb_offline": wandb_offline,
        "sqlite_url": sqlite_url,
        "checkpoint_monitor": checkpoint_monitor,
        "checkpoint_top_k": checkpoint_top_k,
        "cpus_at_most": cpus_at_most,
        "launch_id": launch_id,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)

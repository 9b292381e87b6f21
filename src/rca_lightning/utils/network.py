"""Whether a server can be reached, asked before a client would wait for it (the hub's ImageNet weights, the
wandb server): a TCP connection within a few seconds."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

# Behind one of these a direct probe says nothing: the client is left to try through the proxy.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def server_reachable(url: str, timeout_s: float) -> bool:
    """Whether the host of ``url`` accepts a TCP connection on its port (443 for https, 80 for http, unless
    given) within ``timeout_s``; True behind a proxy (:data:`PROXY_VARIABLES`)."""
    if any(os.environ.get(variable) for variable in PROXY_VARIABLES):
        return True
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False

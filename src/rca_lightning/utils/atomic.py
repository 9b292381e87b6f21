"""Atomic file writes: a reader never sees a half-written output."""

import json
import os
import tempfile
from pathlib import Path


def write_bytes_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as f:
        f.write(content)
    os.replace(f.name, path)


def write_json_atomically(path: Path, content: dict) -> None:
    write_bytes_atomically(path, json.dumps(content, indent=2).encode())

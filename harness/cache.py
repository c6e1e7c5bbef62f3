"""Where the harness caches things: the one answer every stage asks.

Everything the harness can rebuild (MLflow store templates, cost calibrations, converted and
unpacked models, tiktoken's encodings) lives under `$XDG_CACHE_HOME/harness`, else
`~/.cache/harness`. The bundled datasets are looked for in `$HARNESS_CACHE_DIR` first, else
`~/.cache/harness` (without `XDG_CACHE_HOME`: where they have always been fetched to, so a user's
verified copies are found again).
"""

from __future__ import annotations

import os
from pathlib import Path

DATASETS_ENV = "HARNESS_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """`$XDG_CACHE_HOME/harness/<parts>`, else `~/.cache/harness/<parts>` (read at each call, so
    a test or a caller that sets the variable is obeyed)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root, "harness", *parts)


def datasets_dir() -> Path:
    """The bundled datasets' folder: `$HARNESS_CACHE_DIR`, else `~/.cache/harness`."""
    configured = os.environ.get(DATASETS_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "harness"

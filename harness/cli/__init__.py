"""The `harness` command: thin commands over the library, one module per stage.

Importing this package registers every command on `app`.
"""

from __future__ import annotations

import importlib

from harness.cli.common import app

# `--help` lists commands in the order they are registered: the workflow's, not the alphabet's.
for _module in ("run", "report", "handoff", "view"):
    importlib.import_module(f"harness.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `harness` script and `python -m harness`."""
    app()

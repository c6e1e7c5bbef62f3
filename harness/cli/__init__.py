"""The `harness` command: thin commands over the library, one module per stage.

Importing this package registers every command on `app`.
"""

from __future__ import annotations

# `--help` lists commands in the order they are registered: the workflow's, not the alphabet's.
from harness.cli import run, report, handoff, view  # noqa: I001
from harness.cli.common import app

__all__ = ["app", "handoff", "main", "report", "run", "view"]


def main() -> None:
    """Entry point of the `harness` script and `python -m harness`."""
    app()

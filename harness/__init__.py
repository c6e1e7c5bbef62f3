"""harness: decide which fine-tuning setup to pay for.

Importing this package is cheap: backends (torch, transformers, openai) and MLflow load lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"

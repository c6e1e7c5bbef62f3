"""A stateful fake of Together AI's fine-tuning API, checked against its OpenAPI document."""

from __future__ import annotations

from .server import FakeTogether, TogetherState
from .spec import errors_for

__all__ = ["FakeTogether", "TogetherState", "errors_for"]

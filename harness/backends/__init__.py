"""Backends by name. Each entry is a lazy "module:Class" string so that importing `harness`
never imports torch, transformers or openai; only the backend an experiment names is loaded."""

from __future__ import annotations

import importlib
from typing import Any

from harness.backends.base import Backend, NullProgress, Progress
from harness.errors import ConfigError

BACKENDS: dict[str, str] = {
    "local": "harness.backends.local:LocalBackend",
    "openai": "harness.backends.openai:OpenAIBackend",
    "together": "harness.backends.together:TogetherBackend",
    "local_lm": "harness.backends.local_lm:LocalLMBackend",
}


def load_backend(config: Any, progress: Progress | None = None) -> Backend:
    """Instantiate the backend named by `config.kind` with its config and a progress sink."""
    target = BACKENDS.get(config.kind)
    if target is None:
        raise ConfigError(
            f"backend.kind: unknown backend {config.kind!r} (known: {', '.join(BACKENDS)})"
        )
    module_name, _, class_name = target.partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(config, progress=progress or NullProgress())
    return backend

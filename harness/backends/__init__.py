"""Fine-tuning backends; the entry point is `load_backend`.

Which kinds exist, with their config models and classes, is the one table in
`harness.backends.registry`; a class is imported only when an experiment names its kind, so
importing `harness` never imports torch, transformers or openai. Families are packages:
`local/` (encoder and LM), `hosted/` (what every hosted API shares), `openai/` (and its Azure and
Nebius providers), `together/`. Nothing outside `backends/` imports a private (`_`) module.
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Backend, NullProgress, Progress
from harness.backends.registry import backend_class
from harness.errors import ConfigError


def load_backend(config: Any, progress: Progress | None = None) -> Backend:
    """Instantiate the backend named by `config.kind` with its config and a progress sink.

    Raises:
        ConfigError: `config.kind` is no registered kind (the message lists them), or the
            class registered for it says it is another kind.
    """
    backend_type = backend_class(config.kind)
    if getattr(backend_type, "kind", None) != config.kind:
        raise ConfigError(
            f"backend.kind: {backend_type.__name__} says it is {backend_type.kind!r}, but is "
            f"registered as {config.kind!r}"
        )
    backend: Backend = backend_type(config, progress=progress or NullProgress())
    return backend

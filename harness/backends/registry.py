"""The one table of backend kinds: each name with its config model and its class.

Every list of kinds is derived from `KINDS`: the names `backend.kind` accepts (`BACKEND_KINDS`),
the discriminated union an experiment's `backend:` section is validated against
(`BackendConfig`), and the class `harness.backends.load_backend` instantiates. A class is named
by a lazy "module:Class" string, so importing `harness` never imports torch, transformers or
openai: only the backend an experiment names is loaded.

A new kind is one entry here plus its package (`harness/backends/<kind>/`: a `config.py` with
the pydantic model whose `kind` literal is the entry's name, and the class); `check_kinds` (run
at import, and by `tests/test_backend_registry.py`) refuses a half-registered one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import Field

from harness.backends.hosted.config import PriceOverride
from harness.backends.local.config import LocalBackendConfig, LocalLMBackendConfig
from harness.backends.openai.config import OpenAIBackendConfig
from harness.backends.settings import BackendSettings
from harness.backends.together.config import TogetherBackendConfig
from harness.errors import ConfigError

__all__ = [
    "BACKEND_KINDS",
    "KINDS",
    "AnyBackendConfig",
    "BackendConfig",
    "BackendKind",
    "PriceOverride",
    "backend_class",
    "check_kinds",
    "config_models",
    "declared_kind",
]


@dataclass(frozen=True)
class BackendKind:
    """One kind of backend.

    Attributes:
        config: The pydantic model of its `backend:` section; its `kind` field is the literal
            name the kind is registered under.
        backend: "module:Class" of the backend (`harness.backends.base.Backend`), imported
            only when an experiment names the kind.
    """

    config: type[BackendSettings]
    backend: str


KINDS: dict[str, BackendKind] = {
    "local": BackendKind(LocalBackendConfig, "harness.backends.local.encoder:LocalBackend"),
    "openai": BackendKind(OpenAIBackendConfig, "harness.backends.openai.backend:OpenAIBackend"),
    "together": BackendKind(
        TogetherBackendConfig, "harness.backends.together.backend:TogetherBackend"
    ),
    "local_lm": BackendKind(LocalLMBackendConfig, "harness.backends.local.lm:LocalLMBackend"),
}


def declared_kind(config: type[BackendSettings]) -> str | None:
    """The literal a config model's `kind` field is fixed to (None: not one literal)."""
    field = config.model_fields.get("kind")
    annotation = field.annotation if field is not None else None
    if get_origin(annotation) is not Literal or len(get_args(annotation)) != 1:
        return None
    return str(get_args(annotation)[0])


def check_kinds(kinds: dict[str, BackendKind]) -> None:
    """Raise ValueError naming the entry when a kind is half-registered: its config's `kind`
    literal is not its name, or its class is not a "module:Class" string."""
    for name, entry in kinds.items():
        declared = declared_kind(entry.config)
        if declared != name:
            raise ValueError(
                f"backend kind {name!r}: {entry.config.__name__}.kind must be "
                f"Literal[{name!r}], got {declared!r}"
            )
        module, _, class_name = entry.backend.partition(":")
        if not (module.startswith("harness.backends.") and class_name.isidentifier()):
            raise ValueError(f"backend kind {name!r}: {entry.backend!r} is not 'module:Class'")


check_kinds(KINDS)
BACKEND_KINDS: tuple[str, ...] = tuple(KINDS)


def config_models() -> tuple[type[BackendSettings], ...]:
    """Every kind's config model, in registry order."""
    return tuple(entry.config for entry in KINDS.values())


if TYPE_CHECKING:
    # For the type checker every member is a BackendSettings; pydantic gets the real union.
    AnyBackendConfig = BackendSettings
    BackendConfig = BackendSettings
else:
    AnyBackendConfig = Union[config_models()]  # noqa: UP007 - built from a tuple at run time
    BackendConfig = Annotated[AnyBackendConfig, Field(discriminator="kind")]


def backend_class(kind: str) -> Any:
    """The class of backend `kind`, imported now.

    Raises:
        ConfigError: No such kind; the message lists the valid ones.
    """
    entry = KINDS.get(kind)
    if entry is None:
        raise ConfigError(f"backend.kind: unknown backend {kind!r} (known: {', '.join(KINDS)})")
    module_name, _, class_name = entry.backend.partition(":")
    return getattr(importlib.import_module(module_name), class_name)

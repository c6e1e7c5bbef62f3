"""One table of backend kinds (`harness.backends.registry.KINDS`): every list of kinds is derived
from it, and a kind cannot be half-registered.

Checked: each entry's config model is fixed to its name (`kind: Literal[name]`) and has its own
module in its backend's package; the union an experiment is validated against, the kind names
and the loader are exactly the registry's; an unknown kind lists the valid ones wherever it is
named; a broken entry is refused; the README's "Where a change goes" names the registry.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal, get_args

import pytest
from pydantic import ValidationError

from harness.backends import load_backend
from harness.backends.local.config import LocalBackendConfig
from harness.backends.registry import (
    BACKEND_KINDS,
    KINDS,
    AnyBackendConfig,
    BackendKind,
    backend_class,
    check_kinds,
    declared_kind,
)
from harness.backends.settings import BackendSettings
from harness.config import parse_backend_config
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_every_kind_is_registered_under_its_config_s_literal() -> None:
    for name, entry in KINDS.items():
        assert declared_kind(entry.config) == name
        assert issubclass(entry.config, BackendSettings)
        # Its config sits in its own module inside the backend's package, not in a shared list.
        assert entry.config.__module__.startswith("harness.backends.")
        assert entry.config.__module__.endswith(".config")


def test_the_union_and_the_kind_names_are_the_registry() -> None:
    assert tuple(KINDS) == BACKEND_KINDS
    assert get_args(AnyBackendConfig) == tuple(entry.config for entry in KINDS.values())
    for name, entry in KINDS.items():
        parsed = parse_backend_config({"kind": name}, "test")
        assert type(parsed) is entry.config


def test_every_registered_class_exists_without_importing_it() -> None:
    """The lazy "module:Class" strings name a module that exists (importing it is the slow
    contract suite's job: it loads torch)."""
    for name, entry in KINDS.items():
        module, _, class_name = entry.backend.partition(":")
        assert importlib.util.find_spec(module) is not None, name
        source = Path(importlib.util.find_spec(module).origin or "").read_text(encoding="utf-8")
        assert f"class {class_name}" in source and f'kind = "{name}"' in source, name


def test_an_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as unknown:
        backend_class("lokal")
    assert all(name in str(unknown.value) for name in KINDS)

    class Stray(BackendSettings):
        kind: Literal["lokal"] = "lokal"
        model: str = "m"

    with pytest.raises(ConfigError, match="known: local, openai"):
        load_backend(Stray())
    with pytest.raises(ConfigError) as parsed:
        parse_backend_config({"kind": "lokal"}, "test")
    assert all(repr(name) in str(parsed.value) for name in KINDS)


def test_a_half_registered_kind_is_refused() -> None:
    class Mistagged(BackendSettings):  # registered as "fast", tagged "local"
        kind: Literal["local"]
        model: str = "m"

    class Untagged(BackendSettings):  # `kind` left as any string: not in the union's terms
        model: str = "m"

    with pytest.raises(ValueError, match=r"'fast'.*Literal"):
        check_kinds({"fast": BackendKind(Mistagged, "harness.backends.fast:FastBackend")})
    with pytest.raises(ValueError, match="'fast'"):
        check_kinds({"fast": BackendKind(Untagged, "harness.backends.fast:FastBackend")})
    with pytest.raises(ValueError, match="not 'module:Class'"):
        check_kinds({"local": BackendKind(LocalBackendConfig, "harness.backends.local.encoder")})
    check_kinds(KINDS)  # the shipped table passes


def test_a_class_registered_under_another_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Impostor:
        kind = "openai"

        def __init__(self, config: Any, progress: Any) -> None:
            raise AssertionError("never instantiated")

    monkeypatch.setattr("harness.backends.backend_class", lambda kind: Impostor)
    with pytest.raises(ConfigError, match="registered as 'local'"):
        load_backend(LocalBackendConfig(kind="local"))


def test_the_readme_says_where_a_new_kind_goes() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Where a change goes", 1)
    assert len(section) == 2, "README.md has no 'Where a change goes' section"
    text = section[1].split("\n## ", 1)[0]
    assert "harness/backends/registry.py" in text
    assert (ROOT / "harness/backends/registry.py").is_file()
    for name in ("local", "hosted", "openai", "together"):
        assert (ROOT / "harness/backends" / name / "config.py").is_file() or name == "hosted"


def test_a_typo_in_a_kind_s_settings_is_still_an_error() -> None:
    with pytest.raises(ValidationError):
        LocalBackendConfig.model_validate({"kind": "local", "max_lenght": 64})

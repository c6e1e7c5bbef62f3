"""Validate JSON bodies against OpenAI's published OpenAPI document.

The document (``/work/shared/openai/openapi.yaml``, about 3 MB) is parsed once per process and
cached. Two OpenAPI 3.0 leftovers are rewritten into JSON Schema 2020-12 before validating, because
under 2020-12 they mean something else:

- ``exclusiveMinimum: true`` next to ``minimum: X`` (7 schemas) becomes ``exclusiveMinimum: X``;
  read literally, the boolean rejects every number (e.g. ``learning_rate_multiplier: 0.5``).
- ``nullable: true`` (111 schemas, e.g. ``CreateFineTuningJobRequest.suffix``) becomes an explicit
  ``null`` alternative; 2020-12 ignores the keyword, so ``"suffix": null`` would be rejected.

Example::

    validate_component("FineTuningJob", body)  # raises SchemaViolation naming the field
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SPEC_PATH",
    "SchemaViolation",
    "component_names",
    "component_validator",
    "errors_for",
    "load_spec",
    "validate_component",
]

SPEC_PATH = Path(os.environ.get("OPENAI_OPENAPI_PATH", "/work/shared/openai/openapi.yaml"))
_BASE_URI = "urn:openai:openapi"
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SchemaViolation(AssertionError):
    """A body does not match the named OpenAPI component schema."""

    def __init__(self, schema_name: str, errors: list[str]) -> None:
        self.schema_name = schema_name
        self.errors = errors
        shown = "\n  ".join(errors[:5])
        more = f"\n  ... and {len(errors) - 5} more" if len(errors) > 5 else ""
        super().__init__(f"body does not match OpenAPI schema {schema_name!r}:\n  {shown}{more}")


def _fix_quirks(node: Any) -> Any:
    """Return ``node`` with OpenAPI 3.0 keywords rewritten to their JSON Schema 2020-12 meaning."""
    if isinstance(node, list):
        return [_fix_quirks(item) for item in node]
    if not isinstance(node, dict):
        return node
    fixed = {key: _fix_quirks(value) for key, value in node.items()}
    if fixed.get("exclusiveMinimum") is True:
        fixed["exclusiveMinimum"] = fixed.pop("minimum", 0)
    if fixed.get("exclusiveMaximum") is True:
        fixed["exclusiveMaximum"] = fixed.pop("maximum")
    if fixed.pop("nullable", False) is True:
        fixed = _allow_null(fixed)
    return fixed


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Make ``schema`` also accept ``null`` (what OpenAPI 3.0's ``nullable: true`` meant)."""
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


@functools.cache
def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    """Parse the OpenAPI document once and return it with its quirks fixed.

    Args:
        path: Location of ``openapi.yaml``.

    Returns:
        The parsed document (shared; do not mutate it).
    """
    with path.open("rb") as handle:
        raw = yaml.load(handle, Loader=_Loader)
    fixed: dict[str, Any] = _fix_quirks(raw)
    return fixed


@functools.cache
def _registry(path: Path = SPEC_PATH) -> Registry:
    resource = Resource.from_contents(load_spec(path), default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource(_BASE_URI, resource)
    return registry


def component_names(path: Path = SPEC_PATH) -> frozenset[str]:
    """Names of all schemas under ``components.schemas``."""
    return frozenset(load_spec(path)["components"]["schemas"])


@functools.cache
def component_validator(name: str, path: Path = SPEC_PATH) -> jsonschema.Draft202012Validator:
    """Build (once) a validator for ``#/components/schemas/{name}`` with ``$ref`` resolution.

    Args:
        name: A component schema name, e.g. ``"FineTuningJob"``.
        path: Location of ``openapi.yaml``.

    Raises:
        KeyError: ``name`` is not a component schema of the document.
    """
    if name not in component_names(path):
        raise KeyError(f"no component schema named {name!r} in {path}")
    schema = {"$ref": f"{_BASE_URI}#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=_registry(path))


def errors_for(name: str, body: Any) -> list[str]:
    """Every way ``body`` breaks schema ``name``, as ``"path: message"`` lines (empty if valid)."""
    validator = component_validator(name)
    found = sorted(validator.iter_errors(body), key=lambda error: list(error.absolute_path))
    return [f"{error.json_path}: {_short(error)}" for error in found]


def validate_component(name: str, body: Any) -> None:
    """Raise :class:`SchemaViolation` unless ``body`` matches component schema ``name``."""
    errors = errors_for(name, body)
    if errors:
        raise SchemaViolation(name, errors)


def _short(error: jsonschema.ValidationError) -> str:
    message: str = error.message
    if error.context:  # anyOf / oneOf: say why each alternative failed
        reasons = sorted({sub.message for sub in error.context})
        message = f"{message} ({'; '.join(reasons)})"
    return message if len(message) <= 400 else message[:397] + "..."

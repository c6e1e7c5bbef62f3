"""Validate bodies against Azure's own API documents (`azure_openapi_subset.json` here).

The subset holds the data-plane schemas (fine-tuning jobs, files; api-version
2025-04-01-preview) and the Resource Manager ones (deployments; 2024-10-01), copied from
`Azure/azure-rest-api-specs` (source paths and commits in the file's header). They are Swagger 2.0
schemas, which JSON Schema draft 4 reads as they are.

Two readings:

- `errors_for(part, name, body)`: the schema as published (replies are checked this way).
- `errors_for(..., strict=True)`: a field the schema does not declare is an error too. Requests
  are checked this way: what Azure does with an undeclared field is not documented, and either
  answer (a 400, or dropping it silently) is fatal to a harness that relies on the field, so the
  fake refuses it and the harness must not send one.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Literal

import jsonschema

SUBSET_PATH = Path(__file__).with_name("azure_openapi_subset.json")
Part = Literal["data_plane", "resource_manager"]


@functools.cache
def load_subset() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SUBSET_PATH.read_text(encoding="utf-8"))
    return loaded


def definitions(part: Part) -> dict[str, Any]:
    found: dict[str, Any] = load_subset()[part]["definitions"]
    return found


def _strict(defs: dict[str, Any]) -> dict[str, Any]:
    """Every object schema with declared properties refuses others; `allOf` bases are merged in
    first (a base alone would refuse the derived schema's own fields)."""
    out = copy.deepcopy(defs)
    for schema in out.values():
        if "properties" not in schema:
            continue
        for part in schema.pop("allOf", []):
            base = defs[part["$ref"].rsplit("/", 1)[-1]]
            schema["properties"] = {**base.get("properties", {}), **schema["properties"]}
        schema.setdefault("additionalProperties", False)
    return out


@functools.cache
def _validator(part: Part, name: str, strict: bool) -> jsonschema.Draft4Validator:
    defs = definitions(part)
    schema = {"$ref": f"#/definitions/{name}", "definitions": _strict(defs) if strict else defs}
    return jsonschema.Draft4Validator(schema)


def errors_for(part: Part, name: str, body: Any, strict: bool = False) -> list[str]:
    """Every way `body` breaks schema `name`, as `path: message` lines (empty if valid)."""
    found = sorted(
        _validator(part, name, strict).iter_errors(body), key=lambda e: list(e.absolute_path)
    )
    return [f"{error.json_path}: {error.message[:300]}" for error in found]


def project(part: Part, name: str, body: Any) -> Any:
    """`body` cut down to what schema `name` declares, nulls dropped: what Azure's serializer
    sends (it has no field the document does not name, and omits unset ones)."""
    return _project(definitions(part), {"$ref": f"#/definitions/{name}"}, body)


def _resolve(defs: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if "allOf" in schema and "properties" not in schema:
        return _resolve(defs, schema["allOf"][0])
    return schema


def _declared(defs: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    props = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        props = {**_declared(defs, _resolve(defs, part)), **props}
    return props


def _project(defs: dict[str, Any], schema: dict[str, Any], body: Any) -> Any:
    schema = _resolve(defs, schema)
    if isinstance(body, dict):
        declared = _declared(defs, schema)
        extra = schema.get("additionalProperties")
        if not declared and isinstance(extra, dict):
            return {k: _project(defs, extra, v) for k, v in body.items() if v is not None}
        if not declared:
            return body  # free-form (an event's `data`)
        return {
            k: _project(defs, declared[k], v)
            for k, v in body.items()
            if k in declared and v is not None
        }
    if isinstance(body, list) and "items" in schema:
        return [_project(defs, schema["items"], item) for item in body]
    return body

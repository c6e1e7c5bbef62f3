"""Validate bodies against Together AI's published OpenAPI components (`openapi.yaml` here).

`openapi.yaml` holds the components the fake serves, copied unchanged (examples dropped) from
`togethercomputer/openapi` (`openapi.yaml`, commit 090263a, 2026-04-28), plus inline bodies
named here: the request of `POST /fine-tunes` (`CreateFineTuneRequest`), the request and reply of
`POST /fine-tunes/estimate-price` (`FineTuneEstimatePrice{Request,Response}`) and the reply of
`GET /endpoints` (`ListEndpointsResponse`). OpenAPI 3.0's `nullable` is rewritten to
JSON Schema 2020-12 the same way as for OpenAI's document (`tests.openai_fake.schema`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.openai_fake.schema import _fix_quirks

SPEC_PATH = Path(__file__).with_name("openapi.yaml")
_BASE = "urn:together:openapi"


@functools.cache
def load_spec() -> dict[str, Any]:
    fixed: dict[str, Any] = _fix_quirks(yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8")))
    return fixed


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    resource = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource(_BASE, resource)
    return jsonschema.Draft202012Validator(
        {"$ref": f"{_BASE}#/components/schemas/{name}"}, registry=registry
    )


def errors_for(name: str, body: Any) -> list[str]:
    """Every way `body` breaks component `name`, as `path: message` lines (empty if valid)."""
    found = sorted(_validator(name).iter_errors(body), key=lambda e: list(e.absolute_path))
    return [f"{error.json_path}: {error.message[:300]}" for error in found]

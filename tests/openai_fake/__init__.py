"""A stateful, spec-checked fake of the OpenAI HTTP API for tests (see README.md here).

Use the server directly::

    with FakeOpenAI(job_duration=0.2) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)

or the ``openai_fake`` fixture (register it from a conftest with
``from tests.openai_fake import openai_fake``), or, in a child process of its own,
``tests.openai_fake.serve.FakeOpenAIProcess`` (not imported here, so that
``python -m tests.openai_fake.serve`` runs cleanly).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .errors import ApiError
from .objects import FakeConfig, ModelInfo, Oracle, RecordedRequest
from .schema import SchemaViolation, errors_for, load_spec, validate_component
from .server import FakeOpenAI
from .state import FakeState

__all__ = [
    "ApiError",
    "FakeConfig",
    "FakeOpenAI",
    "FakeState",
    "ModelInfo",
    "Oracle",
    "RecordedRequest",
    "SchemaViolation",
    "errors_for",
    "load_spec",
    "openai_fake",
    "validate_component",
]


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    """A running fake (job duration 0.5 s, real clock, replies checked against the spec).

    Teardown stops it and raises if any reply broke the spec or a handler crashed. Options are
    attributes of ``openai_fake.state`` (``job_duration``, ``latency``, ``refuse_training``,
    ``result_files_base64``, ``validate``); for others construct :class:`FakeOpenAI` directly.
    """
    with FakeOpenAI() as server:
        yield server

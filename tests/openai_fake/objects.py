"""Plain data of the fake: its options, recorded requests, model descriptions, stored files."""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .training import TrainingData

__all__ = [
    "COMPLETION_ONLY_MODELS",
    "DEFAULT_BASE_MODELS",
    "FakeConfig",
    "ModelInfo",
    "Oracle",
    "RecordedRequest",
    "Rule",
    "StoredFile",
]

Oracle = Callable[[str, str], Mapping[str, float]]
"""``oracle(model_id, prompt_text) -> {label_text: probability}``."""

# Fine-tunable and callable base models: alias -> the snapshot jobs and replies name.
DEFAULT_BASE_MODELS: dict[str, str] = {
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "babbage-002": "babbage-002",
    "davinci-002": "davinci-002",
}
COMPLETION_ONLY_MODELS = frozenset({"babbage-002", "davinci-002"})


@dataclass
class FakeConfig:
    """Options of one fake server; every field can be passed to ``FakeOpenAI(**options)``.

    Attributes:
        job_duration: Simulated seconds from job creation to success.
        clock: ``"real"`` (simulated time follows wall time, plus ``advance``) or ``"manual"``
            (time moves only through ``state.advance``).
        validate: Check replies (and create/inference requests) against the OpenAPI document.
        seed: Seeds ids and generated job seeds, so runs are reproducible.
        organization: Organisation slug in fine-tuned model names.
        api_key: If set, the only accepted key (others get 401 ``invalid_api_key``).
        result_files_base64: Serve result CSVs base64-encoded, as OpenAI sometimes does.
        min_examples: Fewer training examples fail the job while validating files.
        idle_timeout: Seconds without requests after which the server stops itself.
        latency: Simulated seconds every request waits before its reply is sent (network and
            model time; 0: none). The handler sleeps, so concurrent requests overlap it.
        base_models: Fine-tunable / callable base models, alias -> snapshot.
        dialect: ``"openai"``, or ``"nebius"``: Nebius Token Factory's job API as its reference
            documents it (docs.tokenfactory.nebius.com, OpenAPI 20260506): the create body has
            no ``metadata`` (fields it does not know are dropped, as its server does), the job
            object carries ``suffix`` (64 characters at most) and no ``metadata``, and the job
            listing takes no metadata filter. It also answers Nebius's models API,
            ``GET /v0/models``, in its documented shape: ``fine_tune.training_price_per_million_
            tokens`` from ``nebius_training_prices`` (0.4 for a base model not named there; a
            model named with ``None`` has no ``fine_tune``) and a base flavour at 0.02 / 0.06.
    """

    job_duration: float = 0.5
    clock: Literal["real", "manual"] = "real"
    validate: bool = True
    seed: int = 0
    organization: str = "harness-test"
    api_key: str | None = None
    result_files_base64: bool = False
    min_examples: int = 10
    idle_timeout: float | None = 600.0
    latency: float = 0.0
    base_models: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BASE_MODELS))
    dialect: Literal["openai", "nebius"] = "openai"
    nebius_training_prices: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.job_duration > 0:
            raise ValueError(f"job_duration must be > 0 seconds, got {self.job_duration=}")
        if self.clock not in ("real", "manual"):
            raise ValueError(f"clock must be 'real' or 'manual', got {self.clock=}")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 or None, got {self.idle_timeout=}")
        if not self.latency >= 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.latency=}")


@dataclass
class RecordedRequest:
    """One request as the server saw it (never the Authorization header, never file bytes)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass(frozen=True)
class ModelInfo:
    """What the fake knows about a callable model (for oracles).

    ``epoch`` and ``step`` say where a checkpoint (or the final model: last epoch) was taken;
    ``labels`` are the answers in the model's training file; ``chat`` tells the endpoint it serves.
    """

    model_id: str
    base_model: str
    job_id: str | None = None
    epoch: int | None = None
    step: int | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    chat: bool = True


@dataclass
class Rule:
    """Matches requests by method and path glob (with or without ``/v1``) or regex."""

    pattern: str | re.Pattern[str]
    method: str | None = None
    remaining: int = 1
    rate: float = 1.0  # the chance that a matching request is taken while uses remain
    rng: random.Random | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if isinstance(self.pattern, re.Pattern):
            return self.pattern.search(path) is not None
        return any(fnmatch.fnmatchcase(path, p) for p in (self.pattern, "/v1" + self.pattern))

    def take(self, method: str, path: str) -> bool:
        """Use up one match if this request matches and uses remain."""
        if self.remaining <= 0 or not self.matches(method, path):
            return False
        if self.rate < 1.0 and (self.rng or random).random() >= self.rate:
            return False
        self.remaining -= 1
        return True


@dataclass
class StoredFile:
    """An uploaded or generated file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int
    training: TrainingData | None = None

    def to_api(self) -> dict[str, Any]:
        """The ``OpenAIFile`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }

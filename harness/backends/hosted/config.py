"""What the hosted backends' sections share (`kind: openai` with its providers, `kind: together`):
the client, polling and scoring settings, price overrides, and the check on extra hyperparameters.

The API key is deliberately never a field: each provider's key is read only from its
environment variable, so it can never end up in an experiment file or in MLflow.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from harness.backends.settings import BackendSettings, Strict


class PriceOverride(Strict):
    """Prices for one model in US dollars per 1M tokens, replacing the shipped table's row.

    Given fields replace that row's; a model missing from the table needs `training_per_1m` and
    both `fine_tuned_*` prices. `source` and `as_of` say where the numbers came from.
    """

    training_per_1m: float | None = Field(None, ge=0.0)
    input_per_1m: float | None = Field(None, ge=0.0)
    output_per_1m: float | None = Field(None, ge=0.0)
    fine_tuned_input_per_1m: float | None = Field(None, ge=0.0)
    fine_tuned_output_per_1m: float | None = Field(None, ge=0.0)
    hosting_per_hour: float | None = Field(None, ge=0.0)  # a deployed model, per hour (Azure)
    source: str = "experiment config"
    as_of: str | None = None


def check_extras(extras: dict[str, Any], allowed: dict[str, type], who: str) -> None:
    """Raise ValueError naming the allowed names when an extra is unknown or of the wrong type."""
    for name, value in extras.items():
        kind = allowed.get(name)
        if kind is None:
            known = ", ".join(allowed) or "none"
            raise ValueError(f"{who} does not take hyperparameter {name!r} (allowed: {known})")
        numeric = kind is float and isinstance(value, int) and not isinstance(value, bool)
        if not (isinstance(value, kind) or numeric) or (kind is not bool and value is True):
            raise ValueError(f"{name}: must be {kind.__name__}, got {value!r}")


class HostedConfig(BackendSettings):
    """Settings every hosted fine-tuning API takes; a kind adds its own and its defaults."""

    # None: the provider's environment variable (`OPENAI_BASE_URL`, `TOGETHER_BASE_URL`, ...),
    # else the provider's own endpoint.
    base_url: str | None = None
    # Sent with every job beside the sampled three; which names a provider takes, its config says.
    hyperparameters: dict[str, float | int | bool] = Field(default_factory=dict)
    # Where a provider takes an absolute learning rate (Nebius, Together): this x the sampled
    # learning_rate_multiplier.
    base_learning_rate: float = Field(1e-5, gt=0.0)
    max_concurrency: int = Field(4, ge=1, le=64)  # fine-tuning jobs in flight at once
    eval_concurrency: int = Field(8, ge=1, le=256)  # inference requests in flight at once
    max_retries: int = Field(6, ge=0, le=20)  # per request, exponential backoff on 429 / 5xx
    request_timeout: float = Field(60.0, gt=0.0)
    max_tokens_per_example: int = Field(4096, ge=8)
    min_examples: int = Field(10, ge=1)
    poll_interval: float = Field(10.0, gt=0.0)  # first wait between job polls, seconds
    poll_max_interval: float = Field(60.0, gt=0.0)  # the backoff never waits longer
    job_timeout: float | None = Field(None, gt=0.0)  # seconds; None waits as long as it takes
    evaluate_checkpoints: bool = True
    top_logprobs: int = Field(5, ge=1, le=20)
    # Set from `dataset.system_prompt` unless given; the chat format's system message.
    system_prompt: str | None = None
    prices: dict[str, PriceOverride] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value


# How a promoted model is registered again; `harness.handoff.pyfunc.name_repromote` puts the
# model's own study and trial in place of the placeholders where they are known.
REPROMOTE = "harness promote EXPERIMENT --trial N"


def pinned_endpoint_hint(variable: str | None) -> str:
    """What moves an endpoint `backend.base_url` names (always, for a promoted model, which
    keeps the one it was registered with): not the provider's `variable`. Said when it cannot
    be reached, appended to that error."""
    unmoved = f" ({variable} does not move it)" if variable else ""
    return (
        f". backend.base_url names this endpoint{unmoved}: fix it in the experiment, or, for a "
        "promoted model (it keeps the endpoint it was registered with), register it again with "
        f"`{REPROMOTE} --set backend.base_url=URL`"
    )

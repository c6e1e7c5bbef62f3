"""The backends' sections of an experiment file (`backend:`), one pydantic model per kind.

Kept apart from `harness.config` so that each backend's settings sit together and the union
below is the one place a new kind is added. `extra="forbid"` makes a typo an error.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What the local backend's compute is priced at unless a config says otherwise: a 2-vCPU
# general-purpose cloud instance, the size of the machine the demo was measured on.
REFERENCE_INSTANCE = "AWS c7i.large on-demand, us-east-1 (Linux), list price 2026"
REFERENCE_DOLLARS_PER_HOUR = 0.08925


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalCalibration(Strict):
    """Seconds per 1,000 tokens pinned for local pricing (copy what a trial recorded), so two
    machines price the same work alike; `calibration: auto` measures them once per machine.
    A trial costs (tokens trained x `train_seconds_per_1k_tokens` + tokens scored x
    `infer_seconds_per_1k_tokens`) / 1000 x `dollars_per_hour` / 3600."""

    train_seconds_per_1k_tokens: float = Field(gt=0.0)
    infer_seconds_per_1k_tokens: float = Field(gt=0.0)
    as_of: date  # when the numbers were measured
    source: str = "experiment config"


class LocalBackendConfig(Strict):
    """A Hugging Face transformers encoder fine-tuned with a sequence-classification head."""

    kind: Literal["local"]
    model: str = "all-MiniLM-L6-v2"
    base_learning_rate: float = Field(1e-4, gt=0.0)
    max_length: int = Field(128, ge=8, le=4096)
    eval_batch_size: int = Field(64, ge=1)
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dollars_per_hour: float = Field(REFERENCE_DOLLARS_PER_HOUR, ge=0.0)
    instance: str = REFERENCE_INSTANCE
    # Seconds per token that turn work into dollars: `auto` (read as None) measures them once
    # per machine; a mapping pins them.
    calibration: LocalCalibration | None = None
    models_dir: str = "mlruns/models"
    # Keep the model after every epoch but the last and score it on the test set: each is an
    # extra point of the front for a few seconds of scoring, not a training run of its own.
    evaluate_checkpoints: bool = True

    @property
    def compute_dollars_per_hour(self) -> float:
        """What an hour of this machine's compute costs (the TF-IDF baseline runs here)."""
        return self.dollars_per_hour

    @field_validator("calibration", mode="before")
    @classmethod
    def _read_calibration(cls, value: Any) -> Any:  # `auto` is None; another word says why not
        if isinstance(value, str) and value != "auto":
            raise ValueError(
                f"must be auto or a mapping (train_seconds_per_1k_tokens, ...): {value!r}"
            )
        return None if value == "auto" else value


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
    source: str = "experiment config"
    as_of: str | None = None


class OpenAIBackendConfig(Strict):
    """The OpenAI fine-tuning API, or any endpoint that speaks it (Azure OpenAI, a proxy).

    The API key is deliberately not a field: it is read only from the `OPENAI_API_KEY`
    environment variable, so it can never end up in an experiment file or in MLflow.
    """

    kind: Literal["openai"]
    model: str = "gpt-4.1-nano-2025-04-14"
    # None: `OPENAI_BASE_URL` from the environment, else OpenAI itself.
    base_url: str | None = None
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
    estimate_margin: float = Field(0.10, ge=0.0, le=1.0)  # added to token-count estimates
    suffix: str = Field("harness", pattern=r"^[a-z0-9-]{1,40}$")
    # Set from `dataset.system_prompt` unless given; the chat format's system message.
    system_prompt: str | None = None
    prices: dict[str, PriceOverride] = Field(default_factory=dict)

    @property
    def compute_dollars_per_hour(self) -> float:
        """The reference instance's price: what the TF-IDF baseline costs on this machine."""
        return REFERENCE_DOLLARS_PER_HOUR

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value


BackendConfig = Annotated[LocalBackendConfig | OpenAIBackendConfig, Field(discriminator="kind")]
BACKEND_KINDS = ("local", "openai")

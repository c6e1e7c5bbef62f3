"""The backends' sections of an experiment file (`backend:`), one pydantic model per kind.

Kept apart from `harness.config` so that each backend's settings sit together and the union
below is the one place a new kind is added. `extra="forbid"` makes a typo an error.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class LocalCompute(Strict):
    """What both local backends share: where they run, what an hour of it costs and how the
    per-token rates are found, where models are kept, and whether epoch checkpoints are scored."""

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


class LocalBackendConfig(LocalCompute):
    """A Hugging Face transformers encoder fine-tuned with a sequence-classification head."""

    kind: Literal["local"]
    model: str = "all-MiniLM-L6-v2"
    base_learning_rate: float = Field(1e-4, gt=0.0)
    max_length: int = Field(128, ge=8, le=4096)
    eval_batch_size: int = Field(64, ge=1)
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0)


class LocalLMBackendConfig(LocalCompute):
    """A causal language model fine-tuned locally with LoRA to emit the label (the textbook's
    prompt/completion recipe, or chat messages with `format: chat`), scored by each label's
    log-probability. `lora_rank` / `lora_alpha` apply unless the search space samples them."""

    kind: Literal["local_lm"]
    model: str = "SmolLM2-135M-Instruct"
    format: Literal["completion", "chat"] = "completion"
    # The chat format's system message; None: the dataset's default instruction.
    system_prompt: str | None = None
    base_learning_rate: float = Field(2e-4, gt=0.0)  # a usual LoRA rate; x the multiplier
    lora_rank: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1, le=1024)
    # 0 by default: on a CPU, dropout on every adapter input made a step 1.8x slower (measured)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # "all-linear" (PEFT's shorthand: every linear layer but the output head) or module names.
    target_modules: str | list[str] = "all-linear"
    max_length: int = Field(128, ge=16, le=4096)  # prompt + completion; the text is cut first
    eval_batch_size: int = Field(32, ge=1)
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)

    @field_validator("target_modules")
    @classmethod
    def _check_targets(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value != "all-linear":
            raise ValueError(f"must be all-linear or a list of module names, got {value!r}")
        if isinstance(value, list) and (not value or not all(name.strip() for name in value)):
            raise ValueError("must name at least one module (e.g. [q_proj, v_proj])")
        return value


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


# Hyperparameters a provider takes beyond the three the sweep samples (`backend.hyperparameters`),
# with the type each must have. OpenAI and Azure OpenAI take none; Nebius's API reference
# (docs.tokenfactory.nebius.com, POST /v1/fine_tuning/jobs) lists these.
PROVIDER_EXTRAS: dict[str, dict[str, type]] = {
    "openai": {},
    "azure": {},
    "nebius": {
        "warmup_ratio": float,
        "weight_decay": float,
        "max_grad_norm": float,
        "lora": bool,
        "lora_r": int,
        "lora_alpha": int,
        "lora_dropout": float,
        "packing": bool,
        "context_length": int,
    },
}


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


AZURE_SUFFIX_ROOM = 18  # characters of backend.suffix that fit in an Azure job suffix


class AzureSettings(Strict):
    """Where an Azure OpenAI resource lives, and how its fine-tuned models are deployed.

    The data-plane key comes only from `AZURE_OPENAI_API_KEY` (sent as the `api-key` header);
    deployments are made through Azure Resource Manager with the token in `AZURE_ACCESS_TOKEN`
    (`az account get-access-token --query accessToken -o tsv`).
    """

    resource: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")  # {resource}.openai.azure.com
    api_version: str = "2025-04-01-preview"
    subscription_id: str
    resource_group: str
    # A fine-tuned model is called through a deployment; `developer` deployments are the
    # evaluation tier (no SLA), `standard` / `globalstandard` bill hosting per hour.
    deployment_sku: Literal["developer", "standard", "globalstandard"] = "developer"
    management_url: str = "https://management.azure.com"
    management_api_version: str = "2024-10-01"


class OpenAIBackendConfig(Strict):
    """The OpenAI fine-tuning API, or any endpoint that speaks it (Azure OpenAI, a proxy).

    The API key is deliberately not a field: it is read only from the `OPENAI_API_KEY`
    environment variable, so it can never end up in an experiment file or in MLflow.
    """

    kind: Literal["openai"]
    # Whose endpoint: its URL convention, key variable, extra hyperparameters and price list.
    provider: Literal["openai", "azure", "nebius"] = "openai"
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
    # Sent with every job beside the sampled three; which names a provider takes: PROVIDER_EXTRAS.
    hyperparameters: dict[str, float | int | bool] = Field(default_factory=dict)
    # Nebius takes an absolute learning rate: this x learning_rate_multiplier (its default 1e-5).
    base_learning_rate: float = Field(1e-5, gt=0.0)
    azure: AzureSettings | None = None

    @property
    def compute_dollars_per_hour(self) -> float:
        """The reference instance's price: what the TF-IDF baseline costs on this machine."""
        return REFERENCE_DOLLARS_PER_HOUR

    @model_validator(mode="after")
    def _check_provider(self) -> OpenAIBackendConfig:
        check_extras(self.hyperparameters, PROVIDER_EXTRAS[self.provider], self.provider)
        if (self.provider == "azure") != (self.azure is not None):
            raise ValueError(
                "backend.azure (resource, subscription_id, resource_group) is needed with "
                "provider: azure, and only then"
            )
        if self.azure is not None and len(self.suffix) > AZURE_SUFFIX_ROOM:
            # Azure's job suffix is at most 40 characters and carries the study and job key
            # too (`<suffix>-<study6>-tNNN-<key8>`): that leaves 18 for backend.suffix.
            raise ValueError(
                f"suffix: {self.suffix!r} is {len(self.suffix)} characters; with provider: "
                f"azure at most {AZURE_SUFFIX_ROOM}"
            )
        return self

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value


# Together AI's fine-tuning options beyond the sampled three (POST /v1/fine-tunes, its OpenAPI).
TOGETHER_EXTRAS: dict[str, type] = {
    "warmup_ratio": float,
    "weight_decay": float,
    "max_grad_norm": float,
    "lora_r": int,
    "lora_alpha": int,
    "lora_dropout": float,
}


class TogetherServing(Strict):
    """How Together serves a fine-tuned model or checkpoint for scoring.

    `serverless`: called by its name (serverless LoRA, billed per token; not every model has
    it). `dedicated`: an endpoint on `hardware` made for each scoring and deleted after it,
    billed by the started minute at the price row's `hosting_per_hour`; the budget reserves
    `max_minutes` per endpoint, and scoring stops before an endpoint outlives them.
    """

    kind: Literal["serverless", "dedicated"] = "serverless"
    hardware: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,100}$")  # 1x_nvidia_h100_...
    max_minutes: int = Field(30, ge=2, le=1440)
    # Together stops an endpoint idle this long itself: the safety net if the harness dies.
    inactive_timeout: int = Field(10, ge=1, le=1440)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_hardware(self) -> TogetherServing:
        if self.kind == "dedicated" and self.hardware is None:
            raise ValueError(
                "dedicated serving needs hardware (a Together hardware id, e.g. "
                "1x_nvidia_h100_80gb_sxm; GET /v1/hardware lists them)"
            )
        return self


class TogetherBackendConfig(Strict):
    """Together AI's fine-tuning API (`/v1/fine-tunes`): open models, LoRA or full training.

    The key is read only from `TOGETHER_API_KEY`. Learning rate = `base_learning_rate` x the
    sampled `learning_rate_multiplier`.
    """

    kind: Literal["together"]
    model: str = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
    base_url: str | None = None  # None: TOGETHER_BASE_URL, else https://api.together.xyz/v1
    lora: bool = True  # False: full fine-tuning (priced apart)
    base_learning_rate: float = Field(1e-5, gt=0.0)
    hyperparameters: dict[str, float | int | bool] = Field(default_factory=dict)
    max_concurrency: int = Field(4, ge=1, le=64)
    eval_concurrency: int = Field(8, ge=1, le=256)
    max_retries: int = Field(6, ge=0, le=20)
    request_timeout: float = Field(60.0, gt=0.0)
    max_tokens_per_example: int = Field(4096, ge=8)
    min_examples: int = Field(10, ge=1)
    poll_interval: float = Field(10.0, gt=0.0)
    poll_max_interval: float = Field(60.0, gt=0.0)
    job_timeout: float | None = Field(None, gt=0.0)
    evaluate_checkpoints: bool = True
    top_logprobs: int = Field(5, ge=1, le=20)
    # Token counts come from tiktoken, not the model's own tokenizer: a wider margin.
    estimate_margin: float = Field(0.25, ge=0.0, le=2.0)
    suffix: str = Field("harness", pattern=r"^[a-z0-9-]{1,12}$")
    system_prompt: str | None = None
    prices: dict[str, PriceOverride] = Field(default_factory=dict)
    serving: TogetherServing = Field(default_factory=TogetherServing)

    @property
    def compute_dollars_per_hour(self) -> float:
        """The reference instance's price: what the TF-IDF baseline costs on this machine."""
        return REFERENCE_DOLLARS_PER_HOUR

    @model_validator(mode="after")
    def _check_extras(self) -> TogetherBackendConfig:
        check_extras(self.hyperparameters, TOGETHER_EXTRAS, "together")
        if not self.lora and set(self.hyperparameters) & {"lora_r", "lora_alpha", "lora_dropout"}:
            raise ValueError("lora_r, lora_alpha and lora_dropout need lora: true")
        return self

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value


AnyBackendConfig = (
    LocalBackendConfig | OpenAIBackendConfig | TogetherBackendConfig | LocalLMBackendConfig
)
BackendConfig = Annotated[AnyBackendConfig, Field(discriminator="kind")]
BACKEND_KINDS = ("local", "openai", "together", "local_lm")

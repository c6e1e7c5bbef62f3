"""The `kind: together` section: Together AI's fine-tuning API and how it serves models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from harness.backends.hosted.config import HostedConfig, check_extras
from harness.backends.settings import Strict

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


class TogetherBackendConfig(HostedConfig):
    """Together AI's fine-tuning API (`/v1/fine-tunes`): open models, LoRA or full training.

    The key is read only from `TOGETHER_API_KEY`. Learning rate = `base_learning_rate` x the
    sampled `learning_rate_multiplier`.
    """

    kind: Literal["together"]
    model: str = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
    lora: bool = True  # False: full fine-tuning (priced apart)
    # Token counts come from tiktoken, not the model's own tokenizer: a wider margin.
    estimate_margin: float = Field(0.25, ge=0.0, le=2.0)
    suffix: str = Field("harness", pattern=r"^[a-z0-9-]{1,12}$")
    serving: TogetherServing = Field(default_factory=TogetherServing)

    @model_validator(mode="after")
    def _check_extras(self) -> TogetherBackendConfig:
        check_extras(self.hyperparameters, TOGETHER_EXTRAS, "together")
        if not self.lora and set(self.hyperparameters) & {"lora_r", "lora_alpha", "lora_dropout"}:
            raise ValueError("lora_r, lora_alpha and lora_dropout need lora: true")
        return self

"""The local backends' sections (`kind: local`, the encoder, and `kind: local_lm`, the causal
LM with LoRA): what they share is `LocalCompute`."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import Field, field_validator

from harness.backends.settings import (
    REFERENCE_DOLLARS_PER_HOUR,
    REFERENCE_INSTANCE,
    BackendSettings,
    Strict,
)


class LocalCalibration(Strict):
    """Seconds per 1,000 tokens pinned for local pricing (copy what a trial recorded), so two
    machines price the same work alike; `calibration: auto` measures them once per machine.
    A trial costs (tokens trained x `train_seconds_per_1k_tokens` + tokens scored x
    `infer_seconds_per_1k_tokens`) / 1000 x `dollars_per_hour` / 3600."""

    train_seconds_per_1k_tokens: float = Field(gt=0.0)
    infer_seconds_per_1k_tokens: float = Field(gt=0.0)
    as_of: date  # when the numbers were measured
    source: str = "experiment config"


class LocalCompute(BackendSettings):
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
    # The chat format's system message; None: "Classify the text. Answer with the label only."
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

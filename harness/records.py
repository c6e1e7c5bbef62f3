"""Frozen records passed between the study, the backends, scoring and tracking.

They hold plain values only (no tensors, no SDK objects) so they can be logged, compared in tests
and sent across threads without surprises.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class TrialSpec:
    """One configuration to train, as proposed by the study.

    `learning_rate_multiplier` uses OpenAI's name; the local backend multiplies its configured base
    learning rate by it. `train_examples` is None for "the whole training split"; `lora_rank` /
    `lora_alpha` None for "the backend's setting". `study` names the study the trial belongs to,
    so two studies on the same data keep their models apart. `bound` is set only on a spec that
    prices a corner of the search space rather than one trial (`harness estimate`, the sweep's
    worst case): "dearest" or "cheapest" asks `Backend.estimate` for a cost no trial with these
    parameters exceeds (or goes below), whichever training subset its seed draws.
    """

    number: int
    n_epochs: int
    learning_rate_multiplier: float
    batch_size: int
    base_model: str
    train_examples: int | None = None
    seed: int = 0
    lora_rank: int | None = None
    lora_alpha: int | None = None
    study: str = ""
    bound: Literal["dearest", "cheapest"] | None = None

    def params(self) -> dict[str, Any]:
        """The hyperparameters as MLflow params / table columns."""
        params: dict[str, Any] = {
            "n_epochs": self.n_epochs,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "batch_size": self.batch_size,
            "base_model": self.base_model,
            "train_examples": self.train_examples if self.train_examples is not None else "all",
        }
        lora = {"lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha}
        return params | {k: v for k, v in lora.items() if v is not None}

    def run_name(self) -> str:
        """Readable MLflow run name, e.g. `t007 ep=3 lr=0.5 bs=16`."""
        name = (
            f"t{self.number:03d} ep={self.n_epochs} "
            f"lr={self.learning_rate_multiplier:.3g} bs={self.batch_size}"
        )
        if self.train_examples is not None:
            name += f" n={self.train_examples}"
        if self.lora_rank is not None:
            name += f" r={self.lora_rank}"
        return name


@dataclass(frozen=True)
class Cost:
    """US dollars plus the raw quantities they came from, so every backend sits on one axis."""

    usd: float = 0.0
    compute_seconds: float = 0.0
    trained_tokens: int = 0
    inference_tokens: int = 0
    # The part of `usd` that paid for hosting a deployed model by the hour (an Azure deployment,
    # a Together dedicated endpoint), and the hours billed: hosting runs whether or not the model
    # is called, so the cost of ownership counts it per month, not per request.
    hosting_usd: float = 0.0
    hosting_hours: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            usd=self.usd + other.usd,
            compute_seconds=self.compute_seconds + other.compute_seconds,
            trained_tokens=self.trained_tokens + other.trained_tokens,
            inference_tokens=self.inference_tokens + other.inference_tokens,
            hosting_usd=self.hosting_usd + other.hosting_usd,
            hosting_hours=self.hosting_hours + other.hosting_hours,
        )


@dataclass(frozen=True)
class EpochResult:
    """What a backend knows after one epoch: validation quality and the cost so far."""

    epoch: int
    valid_accuracy: float
    valid_loss: float | None
    train_loss: float | None
    cost_so_far: Cost
    checkpoint: str | None = None
    # Test-set accuracy of this epoch's checkpoint, where a backend can call checkpoints (OpenAI
    # keeps the last three): extra points for the accuracy-against-cost front.
    test_accuracy: float | None = None
    # Which validation examples this epoch's model got right (`harness.scoring.pack_correct`),
    # so the report compares any two models paired, on the same examples.
    valid_correct: str | None = None


@dataclass(frozen=True)
class Prediction:
    """One prediction: the winning label, its probability and the score of every label."""

    label: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedModel:
    """What `Backend.fine_tune` returns: a model that `Backend.predict` can call, and its cost."""

    model_ref: str
    epochs: tuple[EpochResult, ...]
    train_cost: Cost
    stopped_early: bool = False
    job_id: str | None = None


@dataclass(frozen=True)
class Metrics:
    """Test-set scores of one model."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    mae: float | None
    n_examples: int
    # Answers outside the label set (a generative model can say anything): counted wrong above.
    out_of_set: int = 0


@dataclass(frozen=True)
class TrialResult:
    """Everything one finished trial contributes to the study, the tracker and the report."""

    spec: TrialSpec
    model: TrainedModel
    metrics: Metrics
    eval_cost: Cost
    wall_seconds: float
    predictions: tuple[Prediction, ...]

    @property
    def total_cost(self) -> Cost:
        return self.model.train_cost + self.eval_cost


@dataclass(frozen=True)
class Split:
    """Texts and their labels (label strings, from the dataset's label set)."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class PreparedData:
    """Deduplicated, split and shuffled data, identical for every trial of a sweep.

    `digest` is a content hash of all three splits and the label set: two sweeps with the same
    digest trained and tested on the same examples.
    """

    train: Split
    validation: Split
    test: Split
    labels: tuple[str, ...]
    digest: str
    ordinal: bool
    name: str

    def majority_label(self) -> str:
        """The most frequent training label (ties: the first in the label set): what a model that
        learned nothing answers, and the majority-class baseline."""
        counts = Counter(self.train.labels)
        return max(self.labels, key=lambda x: counts.get(x, 0))


def usd(value: float | None) -> str:
    """Dollars to three significant digits below $1 (`$0.0123`, `$0.10`), cents up to $100
    (`$12.34`), whole dollars above (`$1,474`): every figure in dollars the harness prints."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "$0"
    if value < 0:
        return f"-{usd(-value)}"
    if abs(value) >= 100:
        return f"${value:,.0f}"  # cents of hundreds of dollars only widen tables
    if abs(value) >= 1:
        return f"${value:,.2f}"
    decimals = max(2, -math.floor(math.log10(abs(value))) + 2)
    text = f"{value:.{decimals}f}"
    # Three significant digits, but no trailing zeros beyond the cents: $0.10, $0.196, $0.005.
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction[:2]}{fraction[2:].rstrip('0')}"

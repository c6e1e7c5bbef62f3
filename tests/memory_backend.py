"""An in-memory backend for the fast tier: the real sweep loop, budget ledger, admission,
checkpoints, resume and stopping, in seconds, with no model and no server.

Like Optuna's `InMemoryStorage`, it implements the whole `Backend` protocol, so the sweep cannot
tell it from a real one. Its models are synthetic (never a result): a configuration's accuracy
after epoch e is a fixed function of its learning rate and epochs, and whether it gets example i
right is a fixed draw, so every run of a test sees the same numbers. It costs $1 per million
words trained or scored, known exactly before training (the estimate is the full run's cost).
`fail` makes the given calls of `fine_tune` (1 for the first) raise `BackendError`, as a
provider's failed job does.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends.base import (
    Capabilities,
    EpochCallback,
    Estimate,
    Journal,
    ModelPackage,
    RemoteJob,
)
from harness.backends.hosted.pricing import Price
from harness.errors import BackendError
from harness.records import Cost, EpochResult, Prediction, PreparedData, TrainedModel, TrialSpec
from harness.scoring import pack_bits

USD_PER_WORD = 1e-6


def accuracy_after(epoch: int, learning_rate_multiplier: float) -> float:
    """The synthetic model's true accuracy after `epoch` epochs: rises with epochs, fastest at
    a multiplier near 1.5, never above 0.9."""
    speed = math.exp(-((math.log(learning_rate_multiplier / 1.5)) ** 2))
    return 0.5 + 0.4 * (1.0 - math.exp(-epoch * speed))


def _draw(key: str, index: int) -> float:
    digest = hashlib.sha256(f"{key}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def _words(texts: Sequence[str]) -> int:
    return sum(len(t.split()) for t in texts)


@dataclass
class MemoryBackend:
    """See the module docstring; `models` maps every model reference made to its accuracy."""

    kind: str = "memory"
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(synthetic=True, stops_early=True)
    )
    fail: frozenset[int] = frozenset()
    models: dict[str, float] = field(default_factory=dict)
    trained: list[int] = field(default_factory=list)
    # Each text's label, learnt from the data `fine_tune` is given: a fake may peek at the test
    # split, so that `predict` can be right exactly as often as the model's accuracy says.
    answers: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def text_token_limit(self, labels: Sequence[str]) -> int | None:
        return None  # a word-counting fake reads any text whole

    def _train_words(self, spec: TrialSpec, data: PreparedData) -> int:
        texts = data.train.texts[: spec.train_examples or len(data.train)]
        return _words(texts) * spec.n_epochs

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Estimate:
        train = self._train_words(spec, data) + _words(data.validation.texts) * spec.n_epochs
        scored = _words(data.test.texts)
        return Estimate(
            Cost(usd=train * USD_PER_WORD, trained_tokens=train),
            Cost(usd=scored * USD_PER_WORD, inference_tokens=scored),
        )

    def preflight(self, data: PreparedData, models: Sequence[str]) -> None:
        return None

    def price_rows(self, models: Sequence[str]) -> list[Price]:
        return []

    def fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        journal: Journal | None = None,
    ) -> TrainedModel:
        with self._lock:
            self.trained.append(spec.number)
            call = len(self.trained)
        if call in self.fail:
            raise BackendError(f"{spec.run_name()}: the synthetic job failed")
        for split in (data.train, data.validation, data.test):
            self.answers.update(zip(split.texts, split.labels, strict=True))
        per_epoch = self._train_words(spec, data) // spec.n_epochs + _words(data.validation.texts)
        epochs: list[EpochResult] = []
        for epoch in range(1, spec.n_epochs + 1):
            ref = f"memory://{spec.study}/t{spec.number}/epoch-{epoch}"
            truth = accuracy_after(epoch, spec.learning_rate_multiplier)
            self.models[ref] = truth
            right = [_draw(ref, i) < truth for i in range(len(data.validation))]
            spent = per_epoch * epoch
            epochs.append(
                EpochResult(
                    epoch,
                    sum(right) / len(right),
                    None,
                    1.0 - truth,
                    Cost(usd=spent * USD_PER_WORD, trained_tokens=spent),
                    ref if epoch < spec.n_epochs else None,
                    valid_correct=pack_bits(right),
                )
            )
            if on_epoch(epochs[-1]) and epoch < spec.n_epochs:
                break
        last = epochs[-1]
        final = f"memory://{spec.study}/t{spec.number}/epoch-{last.epoch}"
        return TrainedModel(
            final, tuple(epochs), last.cost_so_far, stopped_early=len(epochs) < spec.n_epochs
        )

    def predict(
        self, model_ref: str, texts: Sequence[str], labels: Sequence[str]
    ) -> tuple[list[Prediction], Cost]:
        truth = self.models.get(model_ref)
        if truth is None:
            raise BackendError(f"{model_ref}: no such model")
        predictions = []
        for text in texts:
            true = self.answers.get(text, labels[0])
            wrong = next(label for label in labels if label != true)
            right = _draw(f"{model_ref}|{text}", 0) < truth
            predictions.append(Prediction(true if right else wrong, 0.9 if right else 0.6))
        words = _words(texts)
        return predictions, Cost(usd=words * USD_PER_WORD, inference_tokens=words)

    def is_base_model(self, model_ref: str) -> bool:
        return model_ref not in self.models

    def discard(self, model_ref: str) -> bool:
        return self.models.pop(model_ref, None) is not None

    def release_deployments(self, study_name: str, held: Collection[str]) -> list[str]:
        return []

    def remote_jobs(self, study_name: str) -> list[RemoteJob]:
        return []

    def package(self, model_ref: str, labels: Sequence[str]) -> ModelPackage:
        if model_ref not in self.models:
            raise BackendError(f"{model_ref}: no such model")
        config = {"model_ref": model_ref, "accuracy": self.models[model_ref]}
        return ModelPackage(config={**config, "labels": list(labels)})

    def open_package(self, config: Mapping[str, Any], artifacts: Mapping[str, str]) -> str:
        ref = str(config["model_ref"])
        self.models.setdefault(ref, float(config["accuracy"]))
        return ref

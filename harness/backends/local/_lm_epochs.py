"""The local LM's phases of an epoch, and the model it keeps in memory (for `lm.py`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.backends.base import Journal, Progress
from harness.backends.local._calibration import Pricing, Rates
from harness.backends.local._epochs import Validation, exact_share
from harness.backends.local._lm_format import Formatter, label_sequences
from harness.backends.local._lm_training import LMRun, scored_tokens, train_epoch, validate
from harness.backends.local.config import LocalLMBackendConfig
from harness.records import Cost, PreparedData, TrialSpec
from harness.scoring import pack_bits

GREEDY_NOTE = "greedy_out_of_set"  # validation answers greedy decoding puts outside the set


@dataclass
class LoadedLM:
    """The model kept in memory after `fine_tune` or a `predict` that loaded it."""

    ref: Path
    model: Any
    fmt: Formatter


class LMBackend(Protocol):
    """What the epoch steps use of `harness.backends.local.lm.LocalLMBackend` (a protocol, so
    that module and this one do not import each other)."""

    progress: Progress
    config: LocalLMBackendConfig
    device: torch.device
    pricing: Pricing
    _loaded: LoadedLM | None

    def _save(
        self,
        run: LMRun,
        fmt: Formatter,
        data: PreparedData,
        spec: TrialSpec,
        base: str,
        epoch: int | None = None,
    ) -> str: ...


class LMEpochs:
    """The LM's phases of an epoch (`harness.backends.local._epochs.EpochSteps`); validation
    also journals the answers greedy decoding would put outside the label set."""

    def __init__(
        self,
        backend: LMBackend,
        spec: TrialSpec,
        data: PreparedData,
        trial: tuple[LMRun, Formatter, str],
        priced: tuple[Rates, Journal | None],
    ) -> None:
        self.backend, self.spec, self.data = backend, spec, data
        (self.run, self.fmt, self.path), (self.rates, self.journal) = trial, priced
        self.labels = label_sequences(self.fmt, data.labels)
        self.prompts = self.fmt.prompts(data.validation.texts, data.labels)
        self.truth = torch.tensor([data.labels.index(y) for y in data.validation.labels])
        self.outside: list[int] = []
        self.scored = 0  # validation tokens scored so far

    def train(self, described: str) -> float:
        return train_epoch(self.run, self.backend.progress, described)

    def validate(self) -> Validation:
        run, fmt, config = self.run, self.fmt, self.backend.config
        accuracy, loss, out, right = validate(
            run.model,
            self.prompts,
            self.labels,
            self.truth,
            config.eval_batch_size,
            fmt.eos,
            self.backend.device,
        )
        self.scored += scored_tokens(self.prompts, self.labels)
        self.outside.append(out)
        if self.journal is not None:
            greedy = {"per_epoch": self.outside, "of": len(self.truth)}
            self.journal.record(GREEDY_NOTE, json.dumps(greedy))
        return Validation(exact_share(right, accuracy), loss, pack_bits(right))

    def save(self, epoch: int | None) -> str:
        return self.backend._save(self.run, self.fmt, self.data, self.spec, self.path, epoch)

    def keep(self, checkpoint: str) -> None:
        self.backend._loaded = LoadedLM(Path(checkpoint).resolve(), self.run.model, self.fmt)

    def cost(self, seconds: float) -> Cost:
        return self.backend.pricing.cost(self.rates, self.run.trained_tokens, self.scored, seconds)

"""The Backend contract: every fine-tuning backend (local transformers, OpenAI API) implements it.

The sweep only ever talks to a backend through these methods, so a backend can be swapped by
changing `backend.kind` in an experiment file. Backends are loaded lazily by name (see
`harness.backends.load_backend`) so importing `harness` never imports torch or openai.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from harness.records import Cost, EpochResult, Prediction, PreparedData, TrainedModel, TrialSpec

# Called after every epoch a backend can evaluate. Returning True asks the backend to stop
# training early (the trial cannot reach the Pareto front); the backend then returns what it has.
EpochCallback = Callable[[EpochResult], bool]


class Journal(Protocol):
    """Durable notes about one trial that survive a crash (Optuna user attrs + MLflow tags).

    A remote backend records its job id here *before* waiting on the job; when a killed sweep is
    run again, the retried trial recalls the id and reattaches instead of paying for a new job.
    """

    def recall(self, key: str) -> str | None: ...

    def record(self, key: str, value: str) -> None: ...


class MemoryJournal:
    """A journal that lives as long as the object: for library use and tests."""

    def __init__(self, notes: dict[str, str] | None = None) -> None:
        self.notes: dict[str, str] = dict(notes or {})

    def recall(self, key: str) -> str | None:
        return self.notes.get(key)

    def record(self, key: str, value: str) -> None:
        self.notes[key] = value


class Progress(Protocol):
    """Where a backend reports training progress (the CLI draws it as a progress bar)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, steps: int = 1) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress that goes nowhere: for library use and tests."""

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


class Backend(Protocol):
    """What the sweep needs from a fine-tuning backend."""

    kind: str
    # How many trials the sweep may run at once: 1 for a local device, more for remote jobs
    # that mostly wait on a server.
    max_concurrency: int
    # True when stopping after an epoch saves the remaining epochs' training (local). False when
    # a job is paid in full before its epochs can be seen (OpenAI): the sweep then never stops.
    stops_early: bool

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with this backend's tokenizer (for data reports and estimates)."""
        ...

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Cost:
        """Worst-case cost of `fine_tune` plus test-set `predict` for `spec`, before spending.

        Args:
            spec: The configuration to price.
            data: The prepared data the trial will use.

        Returns:
            The estimated cost in dollars with the quantities it came from.
        """
        ...

    def fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        journal: Journal | None = None,
    ) -> TrainedModel:
        """Train one configuration on `data.train`, evaluating on `data.validation` each epoch.

        Args:
            spec: Hyperparameters, base model, training-set size and seed.
            data: The prepared data; `data.test` must not be touched here.
            on_epoch: Called with every epoch's validation result; if it returns True the backend
                stops and returns the model as it stands.
            journal: Where to record what must survive a crash (a remote job id) and where to
                find it again when the trial is retried; None means nothing is kept.

        Returns:
            A reference `predict` accepts, the per-epoch results and the training cost.

        Raises:
            BackendError: The model cannot be loaded or training failed.
        """
        ...

    def predict(self, model_ref: str, texts: Sequence[str]) -> tuple[list[Prediction], Cost]:
        """Classify `texts` with a fine-tuned model; one prediction per text, same order.

        Returns:
            The predictions (label, confidence, per-label scores) and what inference cost.
        """
        ...

"""The one epoch loop of the local backends (encoder and LM): train, validate, keep a
checkpoint, price, ask `on_epoch` whether to go on; then the model that stops is the trial's.

What differs between the encoder and the LM (how an epoch trains, how validation scores, how a
model is saved) is an `EpochSteps` each backend supplies; the order of the phases, the
checkpoint rule and the clock are here, once.

The clock: a trial's `compute_seconds` are measured from `started` (before its data is encoded)
less the time spent in `on_epoch`, which is the sweep's work (logging, the stopper), not the
backend's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from harness.backends.base import EpochCallback
from harness.records import Cost, EpochResult, TrainedModel, TrialSpec


@dataclass(frozen=True)
class Validation:
    """One epoch's validation: accuracy and mean loss on the validation set, and which
    examples were right (`harness.scoring.pack_bits`, for paired comparisons)."""

    accuracy: float
    loss: float | None
    correct: str | None = None


def exact_share(right: Any, fallback: float) -> float:
    """The share of examples right as an exact fraction (`fallback` when there are none): an
    accuracy averaged in float32 reads 0.5916666388511658 for 355 of 600 in every record."""
    n = len(right)
    return sum(1 for x in right if x) / n if n else fallback


class EpochSteps(Protocol):
    """What one local trial does in each phase of an epoch; `run_epochs` calls them in order."""

    def train(self, described: str) -> float | None:
        """Train one epoch (`described` labels the progress bar); the mean training loss."""
        ...

    def validate(self) -> Validation:
        """Score the validation set with the model as it stands, counting the tokens scored."""
        ...

    def save(self, epoch: int | None) -> str:
        """Save the model as it stands: a checkpoint of `epoch`, or (None) the final model."""
        ...

    def keep(self, checkpoint: str) -> None:
        """The model in memory is `checkpoint` (it stopped there): keep it for `predict`."""
        ...

    def cost(self, seconds: float) -> Cost:
        """What the work so far costs (tokens trained and scored), with `seconds` measured."""
        ...


def run_epochs(
    spec: TrialSpec,
    on_epoch: EpochCallback,
    steps: EpochSteps,
    evaluate_checkpoints: bool,
    started: float,
) -> TrainedModel:
    """Train `spec.n_epochs` epochs, or fewer if `on_epoch` asks to stop (see the module doc).

    Every epoch but the last keeps a checkpoint where `evaluate_checkpoints` (an extra point of
    the front for a few seconds of scoring); a trial that stops where a checkpoint was saved
    delivers that checkpoint, else the final model is saved.
    """
    waited = 0.0  # seconds spent in on_epoch, which is not this backend's compute
    epochs: list[EpochResult] = []
    checkpoint: str | None = None
    for epoch in range(1, spec.n_epochs + 1):
        described = f"{spec.run_name()} epoch {epoch}/{spec.n_epochs}"
        train_loss = steps.train(described)
        valid = steps.validate()
        checkpoint = None
        if epoch < spec.n_epochs and evaluate_checkpoints:
            checkpoint = steps.save(epoch)
        cost = steps.cost(time.perf_counter() - started - waited)
        point = EpochResult(
            epoch,
            valid.accuracy,
            valid.loss,
            train_loss,
            cost,
            checkpoint,
            valid_correct=valid.correct,
        )
        epochs.append(point)
        asked = time.perf_counter()
        stop = on_epoch(epochs[-1])
        waited += time.perf_counter() - asked
        if stop:
            break
    if checkpoint is not None:  # stopped where a checkpoint was saved: that is the model
        ref = checkpoint
        steps.keep(checkpoint)
    else:
        ref = steps.save(None)
    return TrainedModel(
        model_ref=ref,
        epochs=tuple(epochs),
        train_cost=steps.cost(time.perf_counter() - started - waited),
        stopped_early=len(epochs) < spec.n_epochs,
    )

"""Stop a trial whose validation curve cannot reach the accuracy-against-cost front.

Optuna cannot prune a multi-objective study, so the harness stops such trials itself (DESIGN,
Study). After every epoch but the last, a trial at epoch k of n is given an optimistic finish:

- accuracy: its validation accuracy now, plus the largest gain any finished trial made at each of
  the remaining epochs (epoch j to j+1, summed over j = k..n-1), plus two standard errors of a
  validation accuracy measured on this many examples (at most 1);
- cost: its cost so far plus, for every remaining epoch, the cheapest epoch it has run (the first
  epoch counts half: it also paid for loading the model).

It is stopped when a finished trial's model is at least as accurate on validation as that
optimistic finish and cost no more (with one objective, accuracy alone, cost is ignored). The
model it has so far is then scored on the test set like any other, so the money already spent
still buys a point. Nothing is stopped until at least `min_curves` finished trials have shown what
each remaining epoch can add: no evidence, no stopping (an epoch checkpoint is a model to beat,
but its curve is its trial's again, so it is no trial of evidence).

Costs compared are training costs (`cost_usd_by_epoch`: training plus validation so far), the same
quantity for every trial; test scoring costs the same for every model of a sweep.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from harness.records import EpochResult
from harness.tracking.record import TrialRecord

MIN_CURVES = 2  # finished trials that must have run an epoch before its gain counts as known
NOISE_SE = 2.0  # standard errors of validation accuracy added to the optimistic finish
FIRST_EPOCH_SHARE = 0.5  # of the first epoch's cost counted as training (the rest is loading)


@dataclass(frozen=True)
class Point:
    """A model a finished trial delivered: training cost and validation accuracy."""

    cost: float
    accuracy: float


@dataclass(frozen=True)
class Curve:
    """A finished trial's validation accuracy and cost so far after each epoch it ran."""

    accuracy: tuple[float, ...]
    cost: tuple[float, ...]
    # An epoch checkpoint's curve is its trial's first epochs again: a model to beat, but no
    # evidence of what an epoch adds beyond what its trial already gave.
    checkpoint: bool = False

    @classmethod
    def of(cls, record: TrialRecord) -> Curve:
        """The curve a trial (or an epoch checkpoint) recorded in the study."""
        return cls(*record.curve(), checkpoint=record.is_checkpoint)

    def delivered(self) -> Point | None:
        """The point of the model the trial ended with (its last epoch)."""
        if not self.accuracy or not self.cost:
            return None
        return Point(self.cost[-1], self.accuracy[-1])


class FrontStopper:
    """Decides, after each epoch, whether a running trial can still reach the front.

    Thread-safe: finished trials are added by the sweep's thread while trials running in worker
    threads ask `should_stop`.
    """

    def __init__(
        self, n_validation: int, use_cost: bool = True, min_curves: int = MIN_CURVES
    ) -> None:
        self.n_validation = max(1, n_validation)
        self.use_cost = use_cost
        self.min_curves = min_curves
        self._curves: list[Curve] = []
        self._lock = threading.Lock()

    def add(self, curve: Curve) -> None:
        """Learn from a finished trial: its delivered model and its per-epoch gains."""
        if curve.accuracy:
            with self._lock:
                self._curves.append(curve)

    def should_stop(self, epochs: Sequence[EpochResult], n_epochs: int) -> bool:
        """True when the trial's optimistic finish is dominated by a finished trial's model."""
        k = len(epochs)
        if k == 0 or k >= n_epochs:
            return False
        with self._lock:
            curves = list(self._curves)
        gain = _optimistic_gain(curves, k, n_epochs, self.min_curves)
        if gain is None:
            return False
        now = epochs[-1].valid_accuracy
        accuracy = now + gain + NOISE_SE * _standard_error(now, self.n_validation)
        accuracy = min(accuracy, 1.0)  # nothing beats a perfect model
        cost = _optimistic_cost([e.cost_so_far.usd for e in epochs], n_epochs)
        for curve in curves:
            point = curve.delivered()
            if point is None or point.accuracy < accuracy:
                continue
            if not self.use_cost or point.cost <= cost:
                return True
        return False


def _optimistic_gain(curves: list[Curve], k: int, n_epochs: int, min_curves: int) -> float | None:
    """Sum over epochs k..n-1 of the largest gain seen there; None where too few trials ran it."""
    total = 0.0
    for j in range(k, n_epochs):  # the gain of going from epoch j to j + 1 (1-based)
        gains = [
            c.accuracy[j] - c.accuracy[j - 1]
            for c in curves
            if len(c.accuracy) > j and not c.checkpoint
        ]
        if len(gains) < min_curves:
            return None
        total += max(0.0, *gains)
    return total


def _optimistic_cost(costs: list[float], n_epochs: int) -> float:
    """Cost so far plus the cheapest epoch run so far for each epoch left."""
    steps = [costs[0] * FIRST_EPOCH_SHARE] + [b - a for a, b in itertools.pairwise(costs)]
    return costs[-1] + (n_epochs - len(costs)) * max(0.0, min(steps))


def _standard_error(accuracy: float, n: int) -> float:
    # Floored at one example's worth, so a perfect score is not treated as certain.
    return max(math.sqrt(accuracy * (1.0 - accuracy) / n), 1.0 / n)

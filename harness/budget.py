"""The sweep's budget: a hard cap on dollars, with reservations for trials in flight.

A trial's worst-case estimate is reserved before it starts and settled with its actual cost when
it ends, so trials running at once can never together spend more than the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna

from harness.records import Cost


@dataclass
class Budget:
    """Spent dollars (from the study's finished trials) plus reservations of running ones."""

    limit: float | None
    spent: float = 0.0
    reserved: dict[int, float] = field(default_factory=dict)

    @classmethod
    def from_study(cls, limit: float | None, study: optuna.Study) -> Budget:
        """What the study's earlier trials already cost counts against the same budget."""
        trials = study.get_trials(deepcopy=False)
        return cls(
            limit=limit, spent=sum(float(t.user_attrs.get("cost_usd") or 0.0) for t in trials)
        )

    def reserve(self, trial_number: int, estimate: Cost) -> str | None:
        """Reserve `estimate` for a trial; return why not when it would break the budget."""
        if self.limit is None:
            return None
        committed = self.spent + sum(self.reserved.values())
        if committed + estimate.usd > self.limit:
            return (
                f"budget: ${self.spent:.4f} spent and ${committed - self.spent:.4f} reserved of "
                f"${self.limit:.4f}; the next trial could cost up to ${estimate.usd:.4f}, so no "
                "more trials start (raise budget_usd to go on)"
            )
        self.reserved[trial_number] = estimate.usd
        return None

    def settle(self, trial_number: int, actual: Cost | None) -> None:
        """Replace a trial's reservation with what it actually cost (None: nothing)."""
        self.reserved.pop(trial_number, None)
        if actual is not None:
            self.spent += actual.usd

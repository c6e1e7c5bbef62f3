"""The sweep's budget: a hard cap on dollars, with reservations for trials in flight.

A trial's worst-case estimate is reserved before it starts and settled with its actual cost when
it ends, so trials running at once can never together spend more than the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna

from harness.errors import BudgetExceeded
from harness.records import Cost
from harness.sweep.estimate import worst_case_total
from harness.tracking.record import TrialRecord

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.config import Experiment
    from harness.records import PreparedData
    from harness.sweep.search_space import SearchSpace

# Asked when the sweep's worst case exceeds its budget: (worst-case total, budget) -> go on?
Confirm = Callable[[Cost, float], bool]


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
        spent = sum(TrialRecord.from_attrs(t.user_attrs).spent for t in trials)
        return cls(limit=limit, spent=spent)

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


def check_worst_case(
    experiment: Experiment,
    backend: Backend,
    data: PreparedData,
    space: SearchSpace,
    budget: Budget,
    remaining: int,
    confirm: Confirm | None,
) -> None:
    """Ask before a sweep whose worst case could exceed the budget (the budget stays a hard cap
    either way: no trial starts without its worst case reserved)."""
    if budget.limit is None or remaining <= 0:
        return
    n_trials = experiment.config.study.n_trials
    per_trial = worst_case_total(experiment, backend, data, space).usd / n_trials
    worst = Cost(usd=budget.spent + per_trial * remaining)
    if worst.usd <= budget.limit or (confirm is not None and confirm(worst, budget.limit)):
        return
    raise BudgetExceeded(
        f"{experiment.path}: the worst case of {remaining} more trials plus ${budget.spent:.4f} "
        f"already spent is ${worst.usd:.4f}, over budget_usd ${budget.limit:.4f}; run "
        "`harness estimate` to see why, lower study.n_trials, or pass --yes to run until the "
        "budget is used up"
    )

"""One sweep's state: what every step of it needs (`Sweep`), and a trial in flight (`Launched`).

Opened by `harness.sweep.session.open_sweep`; read by the loop, `session` (which records a
finished trial) and `failures` (which fails one).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

from optuna.trial import Trial

from harness.backends.base import Backend
from harness.config import Experiment
from harness.records import Cost, PreparedData, TrialResult, TrialSpec
from harness.sweep import admission
from harness.sweep.budget import Budget
from harness.sweep.live import LiveStatus
from harness.sweep.outcome import SweepOutcome, SweepView
from harness.sweep.search_space import SearchSpace
from harness.sweep.shared import Recovery
from harness.sweep.stopping import FrontStopper
from harness.sweep.study import StudyHandle, spec_from_trial, trained_trials
from harness.tracking.tracker import Tracker


@dataclass
class Launched:
    """A trial handed to the executor, with what is needed to record how it ends."""

    trial: Trial
    spec: TrialSpec
    run_id: str | None
    future: Future[TrialResult]


@dataclass
class Sweep:
    """What every step of one sweep needs, opened once by `_open`."""

    experiment: Experiment
    space: SearchSpace
    backend: Backend
    data: PreparedData
    handle: StudyHandle
    tracker: Tracker
    budget: Budget
    view: SweepView
    outcome: SweepOutcome
    target: int
    recovery: Recovery
    stopper: FrontStopper | None = None
    # Whether the backend accepted a job (or finished a trial) in this sweep (local: one at a time)
    accepted: bool = False
    live: LiveStatus = field(init=False)  # money, epochs and time left, for a live view
    cheapest: Cost = field(init=False)  # no trial starts when the budget cannot cover this
    dearest: Cost = field(init=False)  # with trials in flight, none starts unless this fits

    def __post_init__(self) -> None:
        workers = self.backend.capabilities.max_concurrency
        self.live = LiveStatus(self.view.live, self.budget, self.handle, self.target, workers)
        priced = (self.experiment, self.backend, self.data, self.space)
        admission.price_rungs(*priced, self.handle)  # multi-fidelity: rungs priced like trials
        admission.tell_chance(self.data, self.handle)  # and what learning nothing scores
        self.cheapest = admission.cheapest_trial(*priced) if self.budget.limit else Cost()
        # Trials in flight (this worker's, or any other's on the study) hold worst cases.
        self.dearest = admission.dearest_trial(*priced) if self.budget.limit else Cost()

    def completed(self) -> int:
        return len(trained_trials(self.handle.study))

    def price(self, trial: Trial) -> tuple[TrialSpec, Cost]:
        spec = spec_from_trial(trial, self.space, self.experiment)
        return spec, self.backend.estimate(spec, self.data).total

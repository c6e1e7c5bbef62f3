"""What a running sweep tells a live view beyond the basics: each epoch as it is validated, the
money (spent, reserved, budget), the time left, and trials skipped for budget.

The sweep reports the basics to any `SweepView` (`harness.sweep.outcome`); a view that declares
a `LiveView` as its `live` (the CLI's) gets these events too, through `LiveStatus`. Views whose
`live` is None (tests, benchmarks, library callers) are handed nothing extra.

Time left comes from the estimates: every trial's worst case is priced from its tokens before
it starts (`Backend.estimate`), and for the local backend that price is made of calibrated
compute seconds. The clock scales them by what finished trials really took against their
estimate (loading and saving models are not priced), so the first estimate is already close
and later ones learn the machine. A backend whose estimate has no seconds (OpenAI: jobs wait in
a provider's queue) gets the mean time of the trials finished so far, and none before.

Thread safety: `epoch` may be called from trial worker threads (remote backends); everything
else from the sweep's own thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from harness.records import Cost, EpochResult, TrialSpec
from harness.sweep.budget import Budget
from harness.sweep.study import StudyHandle, trained_trials


@dataclass(frozen=True)
class SweepStatus:
    """The sweep at one moment: trials done of the target, money, and the time left.

    Attributes:
        spent: Dollars settled (finished trials; failed ones at what they are known to have
            been billed, else at their reservation).
        reserved: Dollars held for running trials' worst case, until each is settled.
        budget: `budget_usd`, None when nothing caps the sweep.
        seconds_left: Estimated seconds until the target is reached; None when unknown.
    """

    done: int
    target: int
    running: int
    spent: float
    reserved: float
    budget: float | None
    seconds_left: float | None


class LiveView(Protocol):
    """The events a live view gets beyond `SweepView`'s."""

    def trial_epoch(self, spec: TrialSpec, epoch: EpochResult) -> None:
        """An epoch of a running trial was validated (possibly from a trial worker thread)."""
        ...

    def trial_skipped(self, spec: TrialSpec | None, reason: str) -> None:
        """A trial was not run, and nothing spent on it: the budget cannot cover its worst case
        (`spec` None: no configuration the space allows fits, so none was asked for)."""
        ...

    def sweep_status(self, status: SweepStatus) -> None:
        """Progress, money and time left, after every change the sweep makes."""
        ...


class _Quiet:
    """The extra events, for a view that does not take them."""

    def trial_epoch(self, spec: TrialSpec, epoch: EpochResult) -> None:
        pass

    def trial_skipped(self, spec: TrialSpec | None, reason: str) -> None:
        pass

    def sweep_status(self, status: SweepStatus) -> None:
        pass


def live_view(live: LiveView | None) -> LiveView:
    """Where a view declares its live events go (`SweepView.live`), else a view that drops
    them."""
    return live if live is not None else _Quiet()


@dataclass
class _Running:
    started: float
    estimate: float  # estimated compute seconds, 0 where the backend prices no seconds


class SweepClock:
    """Seconds left in a sweep, from the trials' estimates (see the module docstring)."""

    def __init__(self, concurrency: int = 1, clock: Callable[[], float] = time.monotonic):
        self.concurrency = max(1, concurrency)
        self._clock = clock
        self._running: dict[int, _Running] = {}
        self._estimates: list[float] = []  # every started trial's, for the trials not asked yet
        self._took: list[tuple[float, float]] = []  # (estimate, wall seconds) of finished ones

    @property
    def running(self) -> int:
        return len(self._running)

    def started(self, number: int, estimate: Cost) -> None:
        seconds = max(0.0, estimate.compute_seconds)
        self._running[number] = _Running(self._clock(), seconds)
        self._estimates.append(seconds)

    def finished(self, number: int, wall_seconds: float) -> None:
        trial = self._running.pop(number, None)
        if trial is not None:
            self._took.append((trial.estimate, wall_seconds))

    def dropped(self, number: int) -> None:
        """A trial that ended without a result (failed): it says nothing about speed."""
        self._running.pop(number, None)

    def _expected(self, estimate: float) -> float | None:
        """How long a trial with this estimate takes, by what finished trials took."""
        estimated = sum(e for e, _ in self._took if e > 0)
        if estimate > 0:
            ratio = sum(w for e, w in self._took if e > 0) / estimated if estimated else 1.0
            return estimate * ratio
        walls = [w for _, w in self._took]
        return sum(walls) / len(walls) if walls else None

    def seconds_left(self, done: int, target: int) -> float | None:
        """Until `target` trials are done, `done` of them already (None: nothing to go on, or
        a running trial has taken longer than expected: a busy machine, and its end unknown;
        it read 0:00:00 until that trial finished)."""
        now = self._clock()
        left = 0.0
        for trial in self._running.values():
            expected = self._expected(trial.estimate)
            if expected is None or now - trial.started > expected:
                return None  # nothing to go on, or it already took longer than expected
            left += expected - (now - trial.started)
        waiting = max(0, target - done - len(self._running))
        if waiting:
            if not self._estimates:
                return None
            per_trial = self._expected(sum(self._estimates) / len(self._estimates))
            if per_trial is None:
                return None
            left += waiting * per_trial
        return left / self.concurrency


class LiveStatus:
    """Feeds a live view: the sweep calls it as trials start and end, it sends the status."""

    def __init__(
        self,
        live: LiveView | None,
        budget: Budget,
        handle: StudyHandle,
        target: int,
        concurrency: int,
    ):
        self.view = live_view(live)
        self.budget = budget
        self.handle = handle
        self.target = target
        self.clock = SweepClock(concurrency)

    def started(self, spec: TrialSpec, estimate: Cost) -> None:
        self.clock.started(spec.number, estimate)
        self.update()

    def finished(self, spec: TrialSpec, wall_seconds: float) -> None:
        self.clock.finished(spec.number, wall_seconds)
        self.update()

    def failed(self, spec: TrialSpec) -> None:
        self.clock.dropped(spec.number)
        self.update()

    def skipped(self, spec: TrialSpec | None, reason: str) -> None:
        self.view.trial_skipped(spec, reason)
        self.update()

    def epoch(self, spec: TrialSpec) -> Callable[[EpochResult], None]:
        """What to call with each epoch of the trial `spec` (from any thread)."""

        def report(epoch: EpochResult) -> None:
            self.view.trial_epoch(spec, epoch)

        return report

    def update(self) -> None:
        """Read the ledger and the trials done from the storage and send the status."""
        if isinstance(self.view, _Quiet):
            return  # no reads for a view that shows nothing
        done = len(trained_trials(self.handle.study))
        spent, reserved = self.budget.ledger()
        self.view.sweep_status(
            SweepStatus(
                done=done,
                target=self.target,
                running=self.clock.running,
                spent=spent,
                reserved=reserved,
                budget=self.budget.limit,
                seconds_left=self.clock.seconds_left(done, self.target),
            )
        )

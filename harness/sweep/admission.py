"""Whether a trial starts, and how far it goes: the budget gate and the early stopper.

Trials the budget cannot cover are never run and never counted as failures. Before asking the
study for a trial, the sweep checks that the cheapest configuration the search space allows still
fits in the budget (`cheapest_trial`): when it does not, no trial is asked for at all. When it
fits but the configuration drawn does not, that trial is told PRUNED (not FAIL: nothing went
wrong and nothing was spent), with the reason as its `skipped_reason` attribute, settled at $0 in
the ledger, and without an MLflow run of its own; with nothing of the sweep in flight, the same
configuration cut to fewer epochs or training examples, the dearest cut that fits, is queued and
run instead (`_cut_to_fit`), so one dear draw does not end a sweep that has budget left. Either
way the study's MLflow run gets the reason as its `harness.stopped` tag, so the UI says why the
sweep stopped.

A skipped trial that was a queued retry of a paid remote job is queued again, so that a later
sweep with more budget still resumes that job instead of paying for another.

Local trials that cannot reach the Pareto front stop early: `front_stopper` builds the stopper
(`harness.sweep.stopping`) from the trials already finished.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import optuna
from optuna.trial import Trial, TrialState

from harness.backends.base import Backend
from harness.config import Experiment
from harness.errors import HarnessError
from harness.records import Cost, PreparedData, TrialSpec, usd
from harness.sweep import fidelity
from harness.sweep.budget import Budget
from harness.sweep.estimate import corner_specs
from harness.sweep.live import LiveStatus
from harness.sweep.outcome import SweepOutcome
from harness.sweep.search_space import SearchSpace
from harness.sweep.signals import signals_held
from harness.sweep.stopping import Curve, FrontStopper
from harness.sweep.study import (
    StudyHandle,
    ask,
    claim,
    completed_trials,
    requeue,
    spec_from_trial,
)
from harness.tracking.record import (
    STOPPED_TAG,
    TrialRecord,
    failure_attrs,
    settle_attrs,
    skipped_attrs,
)
from harness.tracking.tracker import Tracker


def cheapest_trial(
    experiment: Experiment, backend: Backend, data: PreparedData, space: SearchSpace
) -> Cost:
    """The worst case of the cheapest configuration the space allows (fewest epochs and
    examples, the cheapest base model): no trial the study can draw reserves less."""
    specs = corner_specs(experiment, space, dearest=False)
    return min((backend.estimate(spec, data).total for spec in specs), key=lambda c: c.usd)


def dearest_trial(
    experiment: Experiment, backend: Backend, data: PreparedData, space: SearchSpace
) -> Cost:
    """The worst case of the dearest configuration the space allows: no trial reserves more."""
    specs = corner_specs(experiment, space)
    return max((backend.estimate(spec, data).total for spec in specs), key=lambda c: c.usd)


@dataclass(frozen=True)
class Asked:
    """A trial to run, its worst case reserved in the budget."""

    trial: Trial
    spec: TrialSpec
    estimate: Cost


class Launching(Protocol):
    """What `ask_within_budget` needs of the sweep."""

    handle: StudyHandle
    space: SearchSpace
    backend: Backend
    data: PreparedData
    budget: Budget
    cheapest: Cost  # `cheapest_trial`
    dearest: Cost  # `dearest_trial`
    tracker: Tracker
    outcome: SweepOutcome
    live: LiveStatus

    def price(self, trial: Trial) -> tuple[TrialSpec, Cost]:
        """The trial's configuration and its worst case."""
        ...


def ask_within_budget(sweep: Launching, in_flight: bool = False) -> Asked | None:
    """Ask for a trial and reserve its worst case. None when the budget cannot cover it: the
    trial is skipped (or, when not even the cheapest could be covered, none is asked for), the
    sweep's outcome, the live view and the study's MLflow run say why, and no more trials
    start. The caller holds the study's `launch` lock.

    While trials are `in_flight` (this worker's or another's on the study), their worst cases
    are held and will settle at what they cost, usually less: a trial is then asked for only
    when the dearest the space allows fits, else None without stopping (the sweep waits for a
    trial to end and asks again), so a reservation about to settle never ends a sweep that has
    budget left."""
    if in_flight and sweep.budget.shortfall(sweep.dearest) is not None:
        return None
    spec = None
    reason = sweep.budget.shortfall(sweep.cheapest, "the cheapest trial the space allows")
    for draw in (0, 1):  # the configuration drawn; then, if it did not fit, the same cut
        if reason is not None:
            break
        with signals_held() as held:  # Optuna's ask is not atomic: the trial is ours first
            trial = ask(sweep.handle, sweep.space)
        try:
            held.deliver()  # a signal that came while asking acts now, the trial in hand
            claim(sweep.handle, trial)
            spec, estimate = sweep.price(trial)  # a first estimate may calibrate the machine
            reason = sweep.budget.reserve(trial, estimate)
        except KeyboardInterrupt:  # Ctrl-C or a signal: the trial is settled, not left RUNNING
            interrupted_before_start(sweep.handle, trial)
            raise
        except HarnessError as exc:  # pricing failed (a price, the data): said, not RUNNING
            interrupted_before_start(sweep.handle, trial, str(exc))
            raise
        if reason is None:
            return Asked(trial, spec, estimate)
        cut = _cut_to_fit(sweep, trial, spec) if draw == 0 else None
        if cut is None:
            skip_trial(sweep.handle, trial, reason)
            break
        instead = _cut_reason(sweep, estimate, cut)
        skip_trial(sweep.handle, trial, instead)
        sweep.live.skipped(spec, instead)
        sweep.handle.study.enqueue_trial(cut[0])  # asked for next, by this worker
        reason = None
    assert reason is not None
    sweep.outcome.stopped = reason
    sweep.tracker.tag(sweep.outcome.parent_run_id, STOPPED_TAG, reason[:5000])
    sweep.live.skipped(spec, reason)
    return None


def _cut_to_fit(
    sweep: Launching, trial: Trial, spec: TrialSpec
) -> tuple[dict[str, Any], Cost] | None:
    """The drawn configuration with fewer epochs (then fewer training examples), the dearest
    such cut whose worst case for any training subset still fits; with its price. None when the
    space samples neither or no cut fits. Learning rate and batch size stay as drawn.

    A cut a trial of the study already trained (or runs, or waits to run) is no option: a
    promotion cut to the training-set size it was promoted from would pay for that trial again
    and learn nothing."""
    options: list[tuple[dict[str, Any], Cost]] = []
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    tried = [t.params for t in sweep.handle.study.get_trials(deepcopy=False, states=states)]
    for epochs in _below(sweep.space, trial.params, "n_epochs", spec.n_epochs):
        for size in _below(sweep.space, trial.params, "train_examples", spec.train_examples):
            params = {**trial.params, "n_epochs": epochs, "train_examples": size}
            params = {k: params[k] for k in trial.params}
            if (epochs, size) == (spec.n_epochs, spec.train_examples) or params in tried:
                continue
            cut = replace(spec, n_epochs=epochs, train_examples=size, bound="dearest")
            options.append((params, sweep.backend.estimate(cut, sweep.data).total))
    fits = [o for o in options if sweep.budget.shortfall(o[1]) is None]
    return max(fits, key=lambda o: o[1].usd, default=None)


def _below(space: SearchSpace, params: dict[str, Any], name: str, drawn: Any) -> list[Any]:
    """The values of a sampled cost parameter at or below the one drawn (only it, if fixed)."""
    dist = space.distributions.get(name)
    if name not in params or dist is None:
        return [drawn]
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return [v for v in dist.choices if v is not None and v <= drawn]
    if isinstance(dist, optuna.distributions.IntDistribution):
        return list(range(dist.low, int(drawn) + 1, dist.step))
    return [drawn]


def _cut_reason(sweep: Launching, estimate: Cost, cut: tuple[dict[str, Any], Cost]) -> str:
    """Why the drawn configuration did not run, and what runs instead."""
    changed = ", ".join(f"{k}={cut[0][k]}" for k in ("n_epochs", "train_examples") if k in cut[0])
    return (
        f"budget: {usd(sweep.budget.committed())} committed of {usd(sweep.budget.limit or 0)}; "
        f"this trial could cost up to {usd(estimate.usd)}, so it runs instead with {changed} "
        f"(up to {usd(cut[1].usd)}), the most the budget still covers"
    )


def interrupted_before_start(
    handle: StudyHandle, trial: Trial, reason: str = "interrupted"
) -> None:
    """A trial asked for and interrupted (or failed: `reason`) before it started: failed and
    queued again, settled at $0 (nothing trained) unless it carries a remote job key, whose
    paid job may exist."""
    attrs = failure_attrs(reason)
    if TrialRecord.from_attrs(trial.user_attrs).job_key is None:
        attrs |= settle_attrs(0.0)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    handle.study.tell(trial, state=TrialState.FAIL)
    requeue(handle.study, handle.storage.get_trial(trial._trial_id))


def skip_trial(handle: StudyHandle, trial: Trial, reason: str) -> None:
    """Tell a trial the budget cannot cover PRUNED, with `reason`, settled at $0."""
    for key, value in skipped_attrs(reason).items():
        trial.set_user_attr(key, value)
    handle.study.tell(trial, state=TrialState.PRUNED)
    frozen = handle.storage.get_trial(trial._trial_id)
    if TrialRecord.from_attrs(frozen.user_attrs).job_key is not None:
        requeue(handle.study, frozen)  # a paid job waits for the budget to be raised


def front_stopper(
    experiment: Experiment, backend: Backend, data: PreparedData, handle: StudyHandle
) -> FrontStopper | None:
    """The early stopper, taught by the trials already finished (None where it saves nothing:
    switched off, or a backend whose jobs are paid in full before any epoch is seen)."""
    study = experiment.config.study
    if not (study.early_stopping and backend.capabilities.stops_early):
        return None
    stopper = FrontStopper(len(data.validation), use_cost="cost" in study.objectives)
    for trial in completed_trials(handle.study):
        stopper.add(Curve.of(TrialRecord.from_attrs(trial.user_attrs)))
    return stopper


def price_rungs(
    experiment: Experiment,
    backend: Backend,
    data: PreparedData,
    space: SearchSpace,
    handle: StudyHandle,
) -> None:
    """Let a fidelity sampler price each training-set size with the backend's own estimate of
    the whole trial (fixed costs included), so that a rung that is not really cheaper than the
    next is skipped (`harness.sweep.fidelity`); any other sampler is left alone."""

    seed = experiment.config.seed

    def pricer(params: dict[str, Any]) -> float:
        distributions = {k: space.distributions[k] for k in params if k in space.distributions}
        trial = optuna.trial.create_trial(
            state=TrialState.WAITING, params=params, distributions=distributions
        )
        # A configuration, not a trial yet: trial number 0 (a created trial's is -1).
        spec = replace(spec_from_trial(trial, space, experiment), number=0, seed=seed)
        return backend.estimate(spec, data).total.usd

    fidelity.attach_pricer(handle.study.sampler, pricer)


def tell_chance(data: PreparedData, handle: StudyHandle) -> None:
    """Tell a fidelity sampler what learning nothing scores on this validation split: always
    answering the most frequent training label (the report's majority-class baseline), so that
    a rung whose models learned nothing neither ranks promotions nor stays the floor
    (`harness.sweep.fidelity`); any other sampler, or no validation split, is left alone."""
    if not len(data.validation):
        return
    label = data.majority_label()
    right = sum(true == label for true in data.validation.labels)
    share = right / len(data.validation)
    fidelity.attach_chance(handle.study.sampler, share, len(data.validation))

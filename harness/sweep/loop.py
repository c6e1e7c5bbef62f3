"""The sweep: ask the study for a configuration, run it on the backend, log it, tell the study.

Everything a user can get wrong (config, search space, data) is checked before the study or the
tracking store is touched, so a bad input never leaves half a study behind.

Threads: a local backend runs one trial at a time in this thread; a remote backend (jobs that
wait on a server) runs up to `capabilities.max_concurrency` trials in worker threads. This
thread alone asks and tells the study, reserves and settles the budget, opens and closes MLflow
runs and records checkpoints. A worker thread writes only to its own trial: per-epoch user
attributes, journal notes, heartbeats and its run's metrics (see `harness.sweep.trial`).
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from optuna.trial import Trial, TrialState

from harness.backends import load_backend
from harness.backends.base import Backend, Progress
from harness.config import Experiment
from harness.data.prepare import prepare_experiment
from harness.errors import BackendError, TrainingRefused
from harness.records import Cost, PreparedData, TrialResult, TrialSpec
from harness.sweep.budget import Budget, Confirm, check_worst_case
from harness.sweep.checkpoints import (
    ScoredCheckpoint,
    add_checkpoint_trial,
    checkpoint_epochs,
    checkpoint_run_name,
    prune_dominated,
    score_checkpoint,
    with_number,
)
from harness.sweep.search_space import SearchSpace, load_search_space
from harness.sweep.stopping import Curve, FrontStopper
from harness.sweep.study import (
    StudyHandle,
    ask,
    claim,
    completed_trials,
    open_study,
    pareto_numbers,
    recover_crashed_trials,
    spec_from_trial,
    trained_trials,
)
from harness.sweep.trial import epoch_logger, executor, run_with_heartbeat, set_attrs
from harness.tracking.journal import TrialJournal
from harness.tracking.record import (
    CHECKPOINT_OF_TAG,
    MLFLOW_RUN_ID,
    SYNTHETIC_TAG,
    TRIAL_TAG,
    TrialRecord,
    failure_attrs,
    launch_attrs,
    result_attrs,
)
from harness.tracking.runs import MlflowTracker, NullTracker, Tracker


class SweepView(Protocol):
    """Where the sweep reports what it is doing (the CLI draws it with rich)."""

    progress: Progress

    def sweep_started(self, study_name: str, done: int, target: int) -> None: ...

    def trial_started(self, spec: TrialSpec, estimate: Cost) -> None: ...

    def trial_finished(self, result: TrialResult) -> None: ...

    def trial_failed(self, spec: TrialSpec, reason: str) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class SweepOutcome:
    """What one `run_sweep` call did; the study itself holds the full history."""

    handle: StudyHandle
    results: list[TrialResult] = field(default_factory=list)
    failures: list[tuple[TrialSpec, str]] = field(default_factory=list)
    stopped: str | None = None
    parent_run_id: str | None = None
    synthetic: bool = False


@dataclass
class _Launched:
    """A trial handed to the executor, with what is needed to record how it ends."""

    trial: Trial
    spec: TrialSpec
    run_id: str | None
    future: Future[TrialResult]


@dataclass
class _Sweep:
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
    stopper: FrontStopper | None = None

    def completed(self) -> int:
        return len(trained_trials(self.handle.study))


def run_sweep(
    experiment: Experiment,
    view: SweepView,
    add_trials: int = 0,
    track: bool = True,
    confirm: Confirm | None = None,
) -> SweepOutcome:
    """Run the study until it holds `study.n_trials` (+ `add_trials`) completed trials.

    Raises:
        BudgetExceeded: The worst case of the remaining trials exceeds `budget_usd` and
            `confirm` (None: never) did not accept it. Nothing has been run or logged then.
    """
    sweep = _open(experiment, view, add_trials, track, confirm)
    attempts_left = 2 * sweep.target  # failures count too: a broken backend cannot loop forever
    running: dict[Future[TrialResult], _Launched] = {}
    with executor(sweep.backend) as pool:
        while True:
            # launch while there is room, trials left to run, and budget to reserve
            while (
                sweep.outcome.stopped is None
                and attempts_left > 0
                and len(running) < sweep.backend.capabilities.max_concurrency
                and sweep.completed() + len(running) < sweep.target
            ):
                attempts_left -= 1
                launched = _launch(sweep, pool)
                if launched is None:
                    break
                running[launched.future] = launched
            if not running:
                break
            # wait for any trial to end, then record it
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                _collect(sweep, running.pop(future))
    # tag the front, close the study's run
    _close(sweep)
    return sweep.outcome


def _open(
    experiment: Experiment,
    view: SweepView,
    add_trials: int,
    track: bool,
    confirm: Confirm | None,
) -> _Sweep:
    """Validate and load everything, check the budget, then open the study and its MLflow run."""
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    backend = load_backend(experiment.config.backend, progress=view.progress)
    data, _ = prepare_experiment(experiment)
    handle = open_study(experiment, space)
    done = len(trained_trials(handle.study))
    target = max(experiment.config.study.n_trials, done) + add_trials
    budget = Budget(experiment.config.budget_usd, handle.study)
    check_worst_case(experiment, backend, data, space, budget, target - done, confirm)
    parent = handle.study.user_attrs.get(MLFLOW_RUN_ID)
    tracker: Tracker = MlflowTracker(experiment, data, parent) if track else NullTracker()
    outcome = SweepOutcome(handle=handle, synthetic=backend.capabilities.synthetic)
    outcome.parent_run_id = tracker.start_study(experiment.study_name, _space_summary(space))
    handle.study.set_user_attr(MLFLOW_RUN_ID, outcome.parent_run_id)
    if outcome.synthetic:
        tracker.tag(outcome.parent_run_id, SYNTHETIC_TAG, "true")
        view.message("(synthetic: the backend is a test server on this machine)")
    for crashed in recover_crashed_trials(handle):
        run_id = TrialRecord.from_attrs(crashed.user_attrs).mlflow_run_id
        tracker.fail_trial(run_id, "worker died", "KILLED")
    view.sweep_started(experiment.study_name, done, target)
    sweep = _Sweep(experiment, space, backend, data, handle, tracker, budget, view, outcome, target)
    sweep.stopper = _stopper(experiment, backend, data, handle)
    return sweep


def _stopper(
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


def _launch(sweep: _Sweep, pool: Any) -> _Launched | None:
    """Ask for a trial, reserve its worst case, open its MLflow run and start it (None: the
    budget cannot cover it, and the sweep stops launching)."""
    trial = ask(sweep.handle, sweep.space)
    claim(sweep.handle, trial)
    spec = spec_from_trial(trial, sweep.space, sweep.experiment)
    estimate = sweep.backend.estimate(spec, sweep.data).total
    sweep.outcome.stopped = sweep.budget.reserve(trial, estimate)
    if sweep.outcome.stopped:
        sweep.handle.study.tell(trial, state=TrialState.FAIL)
        return None
    sweep.view.trial_started(spec, estimate)
    metrics = {"estimated_cost_usd": estimate.usd}
    run_id = sweep.tracker.start_trial(spec, sweep.backend.kind, metrics=metrics)
    set_attrs(trial, launch_attrs(run_id, estimate.usd))
    journal = TrialJournal(trial, sweep.tracker, run_id, sweep.experiment.study_name)
    on_epoch = epoch_logger(sweep.tracker, run_id, trial, spec, sweep.stopper)
    future = pool.submit(
        run_with_heartbeat, sweep.handle, trial, spec, sweep.data, sweep.backend, on_epoch, journal
    )
    return _Launched(trial, spec, run_id, future)


def _close(sweep: _Sweep) -> None:
    """Delete checkpoints off the front, tag the front on the trial runs, close the study's run."""
    study = sweep.handle.study
    front = pareto_numbers(study)
    pruned = prune_dominated(study, front, sweep.backend)
    if pruned:
        sweep.view.message(f"deleted {pruned} epoch checkpoint(s) that are off the Pareto front")
    records = {t.number: TrialRecord.from_attrs(t.user_attrs) for t in completed_trials(study)}
    sweep.tracker.mark_pareto(
        {r.mlflow_run_id: n in front for n, r in records.items() if r.mlflow_run_id}
    )
    sweep.tracker.finish_study()


def _collect(sweep: _Sweep, launched: _Launched) -> None:
    """Record a finished trial: tell the study, close its MLflow run, settle its reservation."""
    trial = launched.trial
    try:
        result = launched.future.result()
    except KeyboardInterrupt:
        _fail(sweep, launched, "interrupted", status="KILLED")
        raise
    except BackendError as exc:
        _fail(sweep, launched, str(exc))
        if isinstance(exc, TrainingRefused):
            sweep.outcome.stopped = str(exc)
        return
    except BaseException as exc:
        _fail(sweep, launched, f"{type(exc).__name__}: {exc}")
        raise
    checkpoints = _score_checkpoints(sweep, result)
    sweep.tracker.finish_trial(launched.run_id, result, sweep.data)
    _tell(trial, sweep.handle, result)
    if sweep.stopper is not None:
        sweep.stopper.add(Curve.of(TrialRecord.from_attrs(trial.user_attrs)))
    sweep.outcome.results.append(result)
    sweep.view.trial_finished(result)
    for checkpoint in checkpoints:
        _record_checkpoint(sweep, trial, checkpoint)


def _score_checkpoints(sweep: _Sweep, result: TrialResult) -> list[ScoredCheckpoint]:
    """Score the trial's epoch checkpoints on the test set (one that fails is skipped)."""
    scored = []
    for epoch in checkpoint_epochs(result):
        try:
            scored.append(score_checkpoint(sweep.backend, sweep.data, result, epoch))
        except BackendError as exc:
            sweep.view.message(f"{result.spec.run_name()}: epoch {epoch.epoch} not scored: {exc}")
    return scored


def _record_checkpoint(sweep: _Sweep, parent: Trial, checkpoint: ScoredCheckpoint) -> None:
    """A checkpoint becomes a completed trial with its own MLflow run (see `checkpoints`)."""
    study = sweep.handle.study
    number = len(study.get_trials(deepcopy=False))  # the number add_trial will give it
    checkpoint = with_number(checkpoint, number)
    result = checkpoint.result
    run_id = sweep.tracker.start_trial(
        result.spec, sweep.backend.kind, name=checkpoint_run_name(checkpoint)
    )
    sweep.tracker.tag(run_id, CHECKPOINT_OF_TAG, str(checkpoint.parent))
    for epoch in result.model.epochs:
        sweep.tracker.log_epoch(run_id, epoch)
    sweep.tracker.finish_trial(run_id, result, sweep.data)
    limit = sweep.experiment.config.study.max_trial_cost_usd
    objectives = len(sweep.handle.objectives)
    added, record = add_checkpoint_trial(study, parent, checkpoint, run_id, objectives, limit)
    if added != number:  # another worker added a trial meanwhile
        sweep.tracker.tag(run_id, TRIAL_TAG, str(added))
    sweep.view.message(
        f"  t{added:03d} = its epoch {checkpoint.epoch}: test acc "
        f"{result.metrics.accuracy:.4f}  cost ${result.total_cost.usd:.4f} "
        f"(scoring it: ${result.eval_cost.usd:.4f})"
    )
    if sweep.stopper is not None:
        sweep.stopper.add(Curve.of(record))


def _tell(trial: Trial, handle: StudyHandle, result: TrialResult) -> None:
    set_attrs(trial, result_attrs(result))
    values = [result.metrics.accuracy, result.total_cost.usd][: len(handle.objectives)]
    handle.study.tell(trial, values)


def _fail(sweep: _Sweep, launched: _Launched, reason: str, status: str = "FAILED") -> None:
    set_attrs(launched.trial, failure_attrs(reason))
    sweep.budget.settle_failed(launched.trial)
    sweep.handle.study.tell(launched.trial, state=TrialState.FAIL)
    sweep.tracker.fail_trial(launched.run_id, reason, status)
    sweep.outcome.failures.append((launched.spec, reason))
    sweep.view.trial_failed(launched.spec, reason)


def _space_summary(space: SearchSpace) -> dict[str, Any]:
    summary: dict[str, Any] = {name: repr(dist) for name, dist in space.distributions.items()}
    summary.update(space.fixed)
    return summary

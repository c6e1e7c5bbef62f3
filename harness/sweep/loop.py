"""The sweep: ask the study for a configuration, run it on the backend, log it, tell the study.

Everything a user can get wrong (config, search space, data) is checked before the study or the
tracking store is touched, so a bad input never leaves half a study behind. A local backend runs
one trial at a time in this thread; a remote backend (jobs that wait on a server) runs up to
`backend.max_concurrency` trials in worker threads, while this thread alone talks to the study.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from optuna.trial import Trial, TrialState

from harness.backends import load_backend
from harness.backends.base import Backend, Progress
from harness.config import Experiment
from harness.data.prepare import prepare_experiment
from harness.errors import BackendError, TrainingRefused
from harness.records import Cost, EpochResult, PreparedData, TrialResult, TrialSpec
from harness.scoring import score
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
    completed_trials,
    heartbeat,
    open_study,
    pareto_numbers,
    recover_crashed_trials,
    spec_from_trial,
    trained_trials,
)
from harness.tracking.journal import TrialJournal
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
    with _executor(sweep.backend) as pool:
        while True:
            # Launch while there is room, trials left to run, and budget to reserve.
            while (
                sweep.outcome.stopped is None
                and attempts_left > 0
                and len(running) < max(1, sweep.backend.max_concurrency)
                and sweep.completed() + len(running) < sweep.target
            ):
                attempts_left -= 1
                launched = _launch(sweep, pool)
                if launched is None:
                    break
                running[launched.future] = launched
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                _collect(sweep, running.pop(future))
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
    budget = Budget.from_study(experiment.config.budget_usd, handle.study)
    check_worst_case(experiment, backend, data, space, budget, target - done, confirm)
    parent = handle.study.user_attrs.get("mlflow_run_id")
    tracker: Tracker = MlflowTracker(experiment, data, parent) if track else NullTracker()
    outcome = SweepOutcome(handle=handle, synthetic=bool(getattr(backend, "synthetic", False)))
    outcome.parent_run_id = tracker.start_study(experiment.study_name, _space_summary(space))
    handle.study.set_user_attr("mlflow_run_id", outcome.parent_run_id)
    if outcome.synthetic:
        tracker.tag(outcome.parent_run_id, "synthetic", "true")
        view.message("(synthetic: the backend is a test server on this machine)")
    for crashed in recover_crashed_trials(handle):
        tracker.fail_trial(crashed.user_attrs.get("mlflow_run_id"), "worker died", "KILLED")
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
    if not (study.early_stopping and backend.stops_early):
        return None
    stopper = FrontStopper(len(data.validation), use_cost="cost" in study.objectives)
    for trial in completed_trials(handle.study):
        stopper.add(_curve(trial.user_attrs))
    return stopper


def _curve(attrs: dict[str, Any]) -> Curve:
    accuracy = [a for a in attrs.get("valid_accuracy_by_epoch", []) if a is not None]
    cost = [c for c in attrs.get("cost_usd_by_epoch", []) if c is not None]
    n = min(len(accuracy), len(cost))
    return Curve(tuple(accuracy[:n]), tuple(cost[:n]))


def _launch(sweep: _Sweep, pool: Any) -> _Launched | None:
    """Ask for a trial, reserve its worst case, open its MLflow run and start it (None: the
    budget cannot cover it, and the sweep stops launching)."""
    trial = ask(sweep.handle, sweep.space)
    spec = spec_from_trial(trial, sweep.space, sweep.experiment)
    estimate = sweep.backend.estimate(spec, sweep.data)
    sweep.outcome.stopped = sweep.budget.reserve(trial.number, estimate)
    if sweep.outcome.stopped:
        sweep.handle.study.tell(trial, state=TrialState.FAIL)
        return None
    sweep.view.trial_started(spec, estimate)
    metrics = {"estimated_cost_usd": estimate.usd}
    run_id = sweep.tracker.start_trial(spec, sweep.backend.kind, metrics=metrics)
    _reset_trial_attrs(trial, run_id)
    trial.set_user_attr("estimated_cost_usd", estimate.usd)
    journal = TrialJournal(trial, sweep.tracker, run_id, sweep.experiment.study_name)
    on_epoch = _epoch_logger(sweep.tracker, run_id, trial, spec, sweep.stopper)
    future = pool.submit(
        _run_with_heartbeat, sweep.handle, trial, spec, sweep.data, sweep.backend, on_epoch, journal
    )
    return _Launched(trial, spec, run_id, future)


def _close(sweep: _Sweep) -> None:
    """Tag the Pareto front on the trial runs and close the study's run."""
    front = pareto_numbers(sweep.handle.study)
    pruned = prune_dominated(sweep.handle.study, front)
    if pruned:
        sweep.view.message(f"deleted {pruned} epoch checkpoint(s) that are off the Pareto front")
    sweep.tracker.mark_pareto(
        {
            t.user_attrs["mlflow_run_id"]: t.number in front
            for t in completed_trials(sweep.handle.study)
            if t.user_attrs.get("mlflow_run_id")
        }
    )
    sweep.tracker.finish_study()


def run_trial(
    spec: TrialSpec,
    data: PreparedData,
    backend: Backend,
    on_epoch: Callable[[EpochResult], bool],
    journal: TrialJournal | None = None,
) -> TrialResult:
    """Fine-tune one configuration, then score it once on the test set."""
    started = time.perf_counter()
    model = backend.fine_tune(spec, data, on_epoch, journal)
    predictions, eval_cost = backend.predict(model.model_ref, data.test.texts)
    metrics = score(data.test.labels, [p.label for p in predictions], data.labels, data.ordinal)
    return TrialResult(
        spec=spec,
        model=model,
        metrics=metrics,
        eval_cost=eval_cost,
        wall_seconds=time.perf_counter() - started,
        predictions=tuple(predictions),
    )


def _run_with_heartbeat(
    handle: StudyHandle,
    trial: Trial,
    spec: TrialSpec,
    data: PreparedData,
    backend: Backend,
    on_epoch: Callable[[EpochResult], bool],
    journal: TrialJournal,
) -> TrialResult:
    with heartbeat(handle, trial):
        return run_trial(spec, data, backend, on_epoch, journal)


def _collect(sweep: _Sweep, launched: _Launched) -> None:
    """Record a finished trial: tell the study, close its MLflow run, settle its reservation."""
    trial = launched.trial
    try:
        result = launched.future.result()
    except KeyboardInterrupt:
        _fail(sweep, launched, "interrupted", status="KILLED")
        raise
    except BackendError as exc:
        sweep.budget.settle(trial.number, None)
        _fail(sweep, launched, str(exc))
        if isinstance(exc, TrainingRefused):
            sweep.outcome.stopped = str(exc)
        return
    except BaseException as exc:
        _fail(sweep, launched, f"{type(exc).__name__}: {exc}")
        raise
    checkpoints = _score_checkpoints(sweep, result)
    scoring = sum((c.result.eval_cost for c in checkpoints), Cost())
    sweep.budget.settle(trial.number, result.total_cost + scoring)
    sweep.tracker.finish_trial(launched.run_id, result, sweep.data)
    _tell(trial, sweep.handle, result)
    if sweep.stopper is not None:
        sweep.stopper.add(_curve(trial.user_attrs))
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
    name = checkpoint_run_name(checkpoint)
    run_id = sweep.tracker.start_trial(result.spec, sweep.backend.kind, name=name)
    sweep.tracker.tag(run_id, "harness.checkpoint_of", str(checkpoint.parent))
    for epoch in result.model.epochs:
        sweep.tracker.log_epoch(run_id, epoch)
    sweep.tracker.finish_trial(run_id, result, sweep.data)
    attrs = {**_result_attrs(result), "mlflow_run_id": run_id}
    study_config = sweep.experiment.config.study
    added = add_checkpoint_trial(
        study,
        parent,
        checkpoint,
        attrs,
        len(sweep.handle.objectives),
        study_config.max_trial_cost_usd,
    )
    if added != number:  # another worker added a trial meanwhile
        sweep.tracker.tag(run_id, "harness.trial_number", str(added))
    sweep.view.message(
        f"  t{added:03d} = its epoch {checkpoint.epoch}: test acc "
        f"{result.metrics.accuracy:.4f}  cost ${result.total_cost.usd:.4f} "
        f"(scoring it: ${result.eval_cost.usd:.4f})"
    )
    if sweep.stopper is not None:
        sweep.stopper.add(_curve(attrs))


def _executor(backend: Backend) -> Any:
    """Worker threads for remote backends; the calling thread itself for one-at-a-time ones, so
    Ctrl-C stops local training at once instead of waiting for a worker thread to finish."""
    if backend.max_concurrency > 1:
        return ThreadPoolExecutor(max_workers=backend.max_concurrency, thread_name_prefix="trial")
    return _InlineExecutor()


class _InlineExecutor:
    def __enter__(self) -> _InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def submit(self, fn: Callable[..., TrialResult], *args: Any) -> Future[TrialResult]:
        future: Future[TrialResult] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to _collect, which re-raises Ctrl-C after cleanup
            future.set_exception(exc)
        return future


def _reset_trial_attrs(trial: Trial, run_id: str | None) -> None:
    # A retried trial inherits its predecessor's user attrs: keep the journal (the job id to
    # reattach to), start the per-run records afresh.
    trial.set_user_attr("mlflow_run_id", run_id)
    for key in ("valid_accuracy_by_epoch", "cost_usd_by_epoch", "checkpoint_test_accuracy"):
        trial.set_user_attr(key, [])


def _epoch_logger(
    tracker: Tracker,
    run_id: str | None,
    trial: Trial,
    spec: TrialSpec,
    stopper: FrontStopper | None,
) -> Callable[[EpochResult], bool]:
    seen: list[EpochResult] = []

    def on_epoch(epoch: EpochResult) -> bool:
        seen.append(epoch)
        tracker.log_epoch(run_id, epoch)
        # Kept in the study as well as in MLflow so reports can draw per-epoch curves from either.
        values = {
            "valid_accuracy_by_epoch": epoch.valid_accuracy,
            "cost_usd_by_epoch": epoch.cost_so_far.usd,
            "checkpoint_test_accuracy": epoch.test_accuracy,
        }
        for key, value in values.items():
            trial.set_user_attr(key, [*trial.user_attrs.get(key, []), value])
        return stopper is not None and stopper.should_stop(seen, spec.n_epochs)

    return on_epoch


def _tell(trial: Trial, handle: StudyHandle, result: TrialResult) -> None:
    for key, value in _result_attrs(result).items():
        trial.set_user_attr(key, value)
    values = [result.metrics.accuracy, result.total_cost.usd][: len(handle.objectives)]
    handle.study.tell(trial, values)


def _result_attrs(result: TrialResult) -> dict[str, Any]:
    """What a finished trial records in the study beside its objective values."""
    cost = result.total_cost
    return {
        "cost_usd": cost.usd,
        "train_cost_usd": result.model.train_cost.usd,
        "eval_cost_usd": result.eval_cost.usd,
        "compute_seconds": cost.compute_seconds,
        "trained_tokens": cost.trained_tokens,
        "wall_seconds": result.wall_seconds,
        "test_accuracy": result.metrics.accuracy,
        "test_macro_f1": result.metrics.macro_f1,
        "test_weighted_f1": result.metrics.weighted_f1,
        "test_mae": result.metrics.mae,
        "test_out_of_set": result.metrics.out_of_set,
        "model_ref": result.model.model_ref,
        "train_examples": result.spec.train_examples,
        "epochs_run": len(result.model.epochs),
        "stopped_early": result.model.stopped_early,
    }


def _fail(sweep: _Sweep, launched: _Launched, reason: str, status: str = "FAILED") -> None:
    launched.trial.set_user_attr("failure_reason", reason[:2000])
    sweep.handle.study.tell(launched.trial, state=TrialState.FAIL)
    sweep.tracker.fail_trial(launched.run_id, reason, status)
    sweep.outcome.failures.append((launched.spec, reason))
    sweep.view.trial_failed(launched.spec, reason)


def _space_summary(space: SearchSpace) -> dict[str, Any]:
    summary: dict[str, Any] = {name: repr(dist) for name, dist in space.distributions.items()}
    summary.update(space.fixed)
    return summary

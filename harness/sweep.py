"""The sweep: ask the study for a configuration, run it on the backend, log it, tell the study.

Everything a user can get wrong (config, search space, data) is checked before the study or the
tracking store is touched, so a bad input never leaves half a study behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from optuna.trial import Trial, TrialState

from harness.backends import load_backend
from harness.backends.base import Backend, PreparedData, Progress
from harness.config import Experiment
from harness.data import DataReport, prepare_data
from harness.errors import BackendError, HarnessError
from harness.records import Cost, EpochResult, TrialResult, TrialSpec
from harness.scoring import score
from harness.search_space import SearchSpace, load_search_space
from harness.study import (
    StudyHandle,
    ask,
    completed_trials,
    heartbeat,
    open_study,
    pareto_numbers,
    recover_crashed_trials,
    spec_from_trial,
)
from harness.tracking import MlflowTracker, NullTracker


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


def prepare_experiment(experiment: Experiment, backend: Backend | None = None) -> tuple[PreparedData, DataReport]:
    """Load, dedupe and split the experiment's dataset (token statistics when a backend is given)."""
    return prepare_data(
        experiment.config.dataset,
        seed=experiment.config.seed,
        resolve=experiment.resolve_path,
        name=experiment.name,
        count_tokens=backend.count_tokens if backend is not None else None,
    )


def run_sweep(
    experiment: Experiment,
    view: SweepView,
    add_trials: int = 0,
    track: bool = True,
) -> SweepOutcome:
    """Run the study until it holds `study.n_trials` (+ `add_trials`) completed trials."""
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    backend = load_backend(experiment.config.backend, progress=view.progress)
    data, _ = prepare_experiment(experiment)
    handle = open_study(experiment, space)
    study = handle.study
    tracker = (
        MlflowTracker(experiment, data, study.user_attrs.get("mlflow_run_id"))
        if track
        else NullTracker()
    )
    outcome = SweepOutcome(handle=handle)
    outcome.parent_run_id = tracker.start_study(experiment.study_name, _space_summary(space))
    study.set_user_attr("mlflow_run_id", outcome.parent_run_id)
    for crashed in recover_crashed_trials(handle):
        tracker.fail_trial(crashed.user_attrs.get("mlflow_run_id"), "worker died", "KILLED")

    target = max(experiment.config.study.n_trials, len(completed_trials(study))) + add_trials
    view.sweep_started(experiment.study_name, len(completed_trials(study)), target)
    attempts_left = 2 * target  # failures count too, so a broken backend cannot loop forever
    while len(completed_trials(study)) < target and attempts_left > 0:
        attempts_left -= 1
        trial = ask(handle, space)
        spec = spec_from_trial(trial, space, experiment)
        estimate = backend.estimate(spec, data)
        refusal = _budget_refusal(experiment, study, estimate)
        if refusal:
            study.tell(trial, state=TrialState.FAIL)
            outcome.stopped = refusal
            break
        view.trial_started(spec, estimate)
        run_id = tracker.start_trial(spec, backend.kind)
        trial.set_user_attr("mlflow_run_id", run_id)
        try:
            with heartbeat(handle, trial):
                result = run_trial(spec, data, backend, lambda e: _on_epoch(tracker, run_id, trial, e))
        except HarnessError as exc:
            _fail(trial, tracker, run_id, spec, str(exc), outcome, view)
            if not isinstance(exc, BackendError):
                raise
            continue
        except KeyboardInterrupt:
            _fail(trial, tracker, run_id, spec, "interrupted", outcome, view, status="KILLED")
            raise
        tracker.finish_trial(run_id, result, data)
        _tell(trial, handle, result)
        outcome.results.append(result)
        view.trial_finished(result)

    front = pareto_numbers(study)
    tracker.mark_pareto(
        {t.user_attrs["mlflow_run_id"]: t.number in front for t in completed_trials(study) if t.user_attrs.get("mlflow_run_id")}
    )
    tracker.finish_study()
    return outcome


def run_trial(
    spec: TrialSpec,
    data: PreparedData,
    backend: Backend,
    on_epoch: Callable[[EpochResult], bool],
) -> TrialResult:
    """Fine-tune one configuration, then score it once on the test set."""
    started = time.perf_counter()
    model = backend.fine_tune(spec, data, on_epoch)
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


def _on_epoch(tracker: NullTracker, run_id: str | None, trial: Trial, epoch: EpochResult) -> bool:
    tracker.log_epoch(run_id, epoch)
    # Kept in the study as well as in MLflow so reports can draw per-epoch curves from either.
    for key, value in (
        ("valid_accuracy_by_epoch", epoch.valid_accuracy),
        ("cost_usd_by_epoch", epoch.cost_so_far.usd),
    ):
        trial.set_user_attr(key, [*trial.user_attrs.get(key, []), value])
    return False


def _tell(trial: Trial, handle: StudyHandle, result: TrialResult) -> None:
    cost = result.total_cost
    attrs: dict[str, Any] = {
        "cost_usd": cost.usd,
        "train_cost_usd": result.model.train_cost.usd,
        "eval_cost_usd": result.eval_cost.usd,
        "compute_seconds": cost.compute_seconds,
        "wall_seconds": result.wall_seconds,
        "test_accuracy": result.metrics.accuracy,
        "test_macro_f1": result.metrics.macro_f1,
        "test_weighted_f1": result.metrics.weighted_f1,
        "test_mae": result.metrics.mae,
        "model_ref": result.model.model_ref,
        "train_examples": result.spec.train_examples,
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    values = [result.metrics.accuracy, cost.usd][: len(handle.objectives)]
    handle.study.tell(trial, values)


def _fail(
    trial: Trial,
    tracker: NullTracker,
    run_id: str | None,
    spec: TrialSpec,
    reason: str,
    outcome: SweepOutcome,
    view: SweepView,
    status: str = "FAILED",
) -> None:
    trial.set_user_attr("failure_reason", reason[:2000])
    outcome.handle.study.tell(trial, state=TrialState.FAIL)
    tracker.fail_trial(run_id, reason, status)
    outcome.failures.append((spec, reason))
    view.trial_failed(spec, reason)


def _budget_refusal(experiment: Experiment, study: Any, estimate: Cost) -> str | None:
    """Why the next trial may not start (budget), or None when it may."""
    budget = experiment.config.budget_usd
    if budget is None:
        return None
    spent = sum(float(t.user_attrs.get("cost_usd", 0.0)) for t in study.get_trials(deepcopy=False))
    if spent + estimate.usd > budget:
        return (
            f"budget: ${spent:.4f} of ${budget:.4f} spent; the next trial is estimated at "
            f"${estimate.usd:.4f}, so the sweep stops here (raise budget_usd to go on)"
        )
    return None


def _space_summary(space: SearchSpace) -> dict[str, Any]:
    summary: dict[str, Any] = {name: repr(dist) for name, dist in space.distributions.items()}
    summary.update({name: value for name, value in space.fixed.items()})
    return summary

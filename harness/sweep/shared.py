"""One study shared by many workers: its MLflow study run, the trials in flight, recovery, leaving.

Every worker runs `harness sweep` against the same storage URL and tracking server; nothing else
coordinates them (no scheduler). What they share lives in the study storage:

- the study's MLflow run (the study's `mlflow_run_id` user attribute): adopted by every worker,
  created by the first under the study's `study-run` lock, so there is exactly one;
- the trials in flight: `n_trials` counts every worker's RUNNING trials (`toward_target`), checked
  together with `ask` under the `launch` lock;
- the budget ledger (`harness.sweep.budget`, reservations under the `budget` lock);
- recovery: every worker fails stale trials and requeues them on the heartbeat (`Recovery`);
- leaving: each worker tags the Pareto front under the `close` lock (one at a time, the last
  one's tags win and cover every trial) and finishes the study run unless another worker still
  has a trial running; the last worker out finishes it. A worker that joins later reopens it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from harness.backends.hosted.pricing import Price
from harness.config import Experiment
from harness.sweep.locks import study_lock
from harness.sweep.search_space import SearchSpace, check_train_examples, experiment_space
from harness.sweep.storage import worker_host
from harness.sweep.study import (
    WORKER_GONE,
    StudyHandle,
    completed_trials,
    open_study,
    pareto_numbers,
    recover_crashed_trials,
)
from harness.tracking.record import MLFLOW_RUN_ID, PRICES_TAG, TrialRecord
from harness.tracking.runs import MlflowTracker
from harness.tracking.tracker import Tracker


def space_summary(space: SearchSpace) -> dict[str, Any]:
    """The search space as logged on the study run."""
    summary: dict[str, Any] = {name: repr(dist) for name, dist in space.distributions.items()}
    summary.update(space.fixed)
    return summary


def running_trials(handle: StudyHandle) -> list[FrozenTrial]:
    """Every worker's RUNNING trials (epoch checkpoint trials are recorded complete, never
    running; excluded all the same)."""
    running = handle.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t for t in running if not TrialRecord.from_attrs(t.user_attrs).is_checkpoint]


def toward_target(handle: StudyHandle) -> int:
    """What `n_trials` counts: trained trials completed plus every worker's running ones, from
    one read of the storage (two reads could miss a trial completing in between)."""
    counted = (TrialState.COMPLETE, TrialState.RUNNING)
    return sum(
        t.state in counted and not TrialRecord.from_attrs(t.user_attrs).is_checkpoint
        for t in handle.study.get_trials(deepcopy=False)
    )


def paid_job_waiting(handle: StudyHandle) -> bool:
    """Whether a trial queued to resume a paid job waits: it runs even past `n_trials`, since
    its money is spent (a killed worker's second job may be requeued after the target is met)."""
    waiting = handle.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return any(TrialRecord.from_attrs(t.user_attrs).job_key for t in waiting)


def others_hold_paid_jobs(handle: StudyHandle) -> bool:
    """Whether another worker's RUNNING trial has a job of its own: should that worker die, a
    survivor must be there to resume the job, so workers wait for it before leaving."""
    return any(
        not _mine(t) and TrialRecord.from_attrs(t.user_attrs).job_key
        for t in running_trials(handle)
    )


def _mine(trial: FrozenTrial) -> bool:
    record = TrialRecord.from_attrs(trial.user_attrs)
    return (record.host, record.pid) == (worker_host(), os.getpid())


def others_running(handle: StudyHandle) -> bool:
    """Whether a trial of another worker is RUNNING (this worker's own are ending with it)."""
    return not all(_mine(t) for t in running_trials(handle))


def join_study_run(
    handle: StudyHandle, tracker: Tracker, study_name: str, summary: dict[str, Any]
) -> str | None:
    """The study's MLflow run: the one the study names (reopened), else a new one it then names.

    Under the study's `study-run` lock, so workers that start together adopt one run.
    """
    with study_lock(handle.study, "study-run"):
        stored = handle.study.user_attrs.get(MLFLOW_RUN_ID)
        run_id = tracker.start_study(study_name, summary, run_id=stored)
        if run_id is not None and run_id != stored:
            handle.study.set_user_attr(MLFLOW_RUN_ID, run_id)
    return run_id


class Recovery:
    """Fails the stale trials of dead workers and requeues them, at most once a heartbeat
    interval (or `now`: at start and before each launch, so a dead worker's trial runs before
    a new one), closing their MLflow runs as KILLED; at `start`, also the runs of workers that
    died before they recorded a trial's run id."""

    def __init__(self, handle: StudyHandle, tracker: Tracker) -> None:
        self.handle, self.tracker = handle, tracker
        self.last = float("-inf")

    def __call__(self, now: bool = False, start: bool = False) -> int:
        if not now and time.monotonic() - self.last < self.handle.heartbeat_seconds:
            return 0
        self.last = time.monotonic()
        for trial in filter(_mine, running_trials(self.handle)):
            self.handle.storage.record_heartbeat(trial._trial_id)  # alive: never stale to us
        crashed = recover_crashed_trials(self.handle)
        for trial in crashed:
            run_id = TrialRecord.from_attrs(trial.user_attrs).mlflow_run_id
            self.tracker.fail_trial(run_id, "worker died", "KILLED")
        if start:
            running = {t.number for t in running_trials(self.handle)}
            trials = self.handle.study.get_trials(deepcopy=False)
            self.tracker.close_abandoned_runs(running, len(trials), failed_runs(trials))
        return len(crashed)


# A trial failed for one of these was stopped, not at fault: its run ends KILLED, as it would
# have had its worker closed it.
_KILLED_REASONS = ("interrupted", WORKER_GONE)


def failed_runs(trials: Sequence[FrozenTrial]) -> dict[int, tuple[str, str]]:
    """Each failed trial's recorded reason and the status its MLflow run ends with: what the
    next start closes a run with that its worker could not close (its tracking server gone)."""
    failed = {}
    for trial in trials:
        reason = TrialRecord.from_attrs(trial.user_attrs).failure_reason
        if trial.state == TrialState.FAIL and reason:
            failed[trial.number] = (reason, "KILLED" if reason in _KILLED_REASONS else "FAILED")
    return failed


def tag_front_and_leave(handle: StudyHandle, tracker: Tracker) -> set[int]:
    """Tag every trial run on or off the Pareto front, and finish the study run unless another
    worker still runs a trial; returns the front. One worker at a time (`close` lock)."""
    study = handle.study
    with study_lock(study, "close"):
        front = pareto_numbers(study)
        records = {t.number: TrialRecord.from_attrs(t.user_attrs) for t in completed_trials(study)}
        tracker.mark_pareto(
            {r.mlflow_run_id: n in front for n, r in records.items() if r.mlflow_run_id}
        )
        if not others_running(handle):
            tracker.finish_study()
    return front


@dataclass
class CreatedStudy:
    """What `create_shared_study` made (or found)."""

    study_name: str
    trials: int
    parent_run_id: str | None
    created_run: bool


def create_shared_study(experiment: Experiment) -> CreatedStudy:
    """Create the experiment's study and its MLflow study run once, before workers join.

    Idempotent: run again (or after workers started) it finds both. Needs the dataset (the study
    run records it) but no backend credentials.
    """
    from harness.data.prepare import prepare_experiment

    space = experiment_space(experiment)
    data, _ = prepare_experiment(experiment)
    check_train_examples(space, len(data.labels))  # as `harness sweep` does, before the study
    handle = open_study(experiment, space)
    tracker = MlflowTracker(experiment, data, None)
    before = handle.study.user_attrs.get(MLFLOW_RUN_ID)
    run_id = join_study_run(handle, tracker, experiment.study_name, space_summary(space))
    if not others_running(handle):
        tracker.finish_study()  # nothing runs yet: each worker reopens it as it joins
    trials = len(handle.study.get_trials(deepcopy=False))
    return CreatedStudy(experiment.study_name, trials, run_id, created_run=run_id != before)


def tag_prices(tracker: Tracker, run_id: str | None, rows: Sequence[Price]) -> None:
    """Tag the study's run with the dated price rows this sweep is priced at (hosted backends;
    none for a backend priced by compute time), so a result says which prices it rests on."""
    used = "; ".join(f"{p.provider} {p.model}: {p.source}, as of {p.as_of}" for p in rows)
    if used:
        tracker.tag(run_id, PRICES_TAG, used[:5000])

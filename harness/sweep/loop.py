"""The sweep: ask the study for a configuration, run it on the backend, record it, tell the study.

`run_sweep` is the whole loop; asking and starting a trial is `_launch` here, recording and
telling is `harness.sweep.session.collect`.

Everything a user can get wrong (config, search space, data) is checked before the study or the
tracking store is touched, so a bad input never leaves half a study behind.

Threads: a local backend runs one trial at a time in this thread; a remote backend (jobs that
wait on a server) runs up to `capabilities.max_concurrency` trials in worker threads. This
thread alone asks and tells the study, reserves and settles the budget, opens and closes MLflow
runs and records checkpoints. A worker thread writes only to its own trial: per-epoch user
attributes, journal notes, heartbeats and its run's metrics (see `harness.sweep.trial`).

Processes on one machine or many share a study through its storage: one study run, one target
and budget for all, and each recovers dead workers' trials (see `harness.sweep.shared`).
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from harness.config import Experiment
from harness.records import TrialResult
from harness.sweep import admission, search_space
from harness.sweep.budget import Confirm
from harness.sweep.failures import abandon, fail_raised, interrupted
from harness.sweep.grid import grid_done
from harness.sweep.locks import study_lock
from harness.sweep.outcome import SweepOutcome, SweepView
from harness.sweep.running import Launched, Sweep
from harness.sweep.session import close_sweep, collect, open_sweep
from harness.sweep.shared import (
    others_hold_paid_jobs,
    others_running,
    paid_job_waiting,
    toward_target,
)
from harness.sweep.trial import epoch_logger, executor, run_with_heartbeat, set_attrs
from harness.tracking.journal import TrialJournal
from harness.tracking.record import STOPPED_TAG, TrialRecord, launch_attrs, used_train_examples
from harness.tracking.store import server_unreachable


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
    sweep = open_sweep(experiment, view, add_trials, track, confirm)
    attempts_left = 2 * sweep.target  # failures count too: a broken backend cannot loop forever
    running: dict[Future[TrialResult], Launched] = {}
    try:
        with executor(sweep.backend) as pool:
            while True:
                # launch while there is room, trials left to run, and budget to reserve
                while (
                    sweep.outcome.stopped is None
                    and attempts_left > 0
                    and len(running) < _room(sweep, running)
                ):
                    # Every worker's trials in flight hold worst cases that settle lower.
                    in_flight = bool(running) or others_running(sweep.handle)
                    launched = _launch(sweep, pool, in_flight)
                    if launched is None:
                        break
                    attempts_left -= 1
                    running[launched.future] = launched
                if not running and not _wait_for_others(sweep, attempts_left):
                    break
                # wait for a trial to end (or, before any job was accepted, to start its job),
                # waking on the heartbeat to recover trials of workers that died
                beat = sweep.handle.heartbeat_seconds
                if running:
                    timeout = beat if sweep.accepted else 0.5
                    done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                    for future in done:
                        collect(sweep, running.pop(future))
                else:  # waiting on other workers: their trials move the status line
                    time.sleep(min(beat, 2.0))
                    sweep.live.update()
                sweep.recovery()
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (`harness.errors.Terminated`)
        abandon(sweep, running)
        raise
    except Exception as exc:
        if server_unreachable(exc) is not None:  # the trials beside it are cut short alike
            for launched in running.values():
                fail_raised(sweep, launched, exc)
        raise
    finally:
        # tag the front, close the study's run (also when a trial raised or Ctrl-C came)
        close_sweep(sweep)
    return sweep.outcome


def _wait_for_others(sweep: Sweep, attempts_left: int) -> bool:
    """Nothing of this worker runs: stay while another worker's trial runs and the study is
    short of its target, or that trial holds a paid job (should its worker die, the trial is
    ours to resume: a paid job is never left behind)."""
    if sweep.outcome.stopped is not None or attempts_left <= 0:
        return False
    short = sweep.completed() < sweep.target and others_running(sweep.handle)
    return short or others_hold_paid_jobs(sweep.handle) or paid_job_waiting(sweep.handle)


def _room(sweep: Sweep, running: dict[Future[TrialResult], Launched]) -> int:
    """How many trials may run at once. One until the backend has accepted a first job in this
    sweep: a provider that refuses training (or rejects the key) then refuses one trial, not
    `max_concurrency` of them each uploading its files first."""
    if sweep.backend.capabilities.max_concurrency == 1:
        return 1
    if not sweep.accepted:
        sweep.accepted = any(
            TrialRecord.from_attrs(
                sweep.handle.storage.get_trial(r.trial._trial_id).user_attrs
            ).job_id
            for r in running.values()
        )
    return sweep.backend.capabilities.max_concurrency if sweep.accepted else 1


def _target_reached(sweep: Sweep) -> bool:
    """The study holds its trials, counting every worker's running ones, and no paid job waits
    (a paid job runs past the target)."""
    reached = toward_target(sweep.handle) >= sweep.target
    return reached and not paid_job_waiting(sweep.handle)


def _launch(sweep: Sweep, pool: Any, in_flight: bool) -> Launched | None:
    """Ask for a trial, reserve its worst case, open its MLflow run and start it (None: the study
    has its trials, counting every worker's running ones, or the budget cannot cover the next:
    the sweep stops launching, or with trials `in_flight` waits for one to settle). Counting,
    asking and reserving hold the `launch` lock."""
    if _target_reached(sweep):
        return None
    sweep.recovery(now=True)  # a dead worker's trial, queued again, is asked for first
    with study_lock(sweep.handle.study, "launch"):
        if _target_reached(sweep):  # another worker may have launched meanwhile
            return None
        if (done := grid_done(sweep.handle.study)) is not None:  # nothing new left to try
            sweep.outcome.stopped = done
            sweep.tracker.tag(sweep.outcome.parent_run_id, STOPPED_TAG, done)
            return None
        asked = admission.ask_within_budget(sweep, in_flight)
    if asked is None:
        return None
    trial, spec, estimate = asked.trial, asked.spec, asked.estimate
    run_id: str | None = None
    submitting = False
    try:
        if capped := search_space.capped_train_examples(spec, len(sweep.data.train)):
            sweep.view.message(capped)
        sweep.view.trial_started(spec, estimate)
        sweep.live.started(spec, estimate)
        metrics = {"estimated_cost_usd": estimate.usd}
        run_id = sweep.tracker.start_trial(spec, sweep.backend.kind, metrics=metrics)
        # The rows it trains on, as its run is named and logged, from the start: a trial that
        # fails or is killed shows the size used too, not the size asked for.
        used = used_train_examples(spec.train_examples, len(sweep.data.train))
        set_attrs(trial, {**launch_attrs(run_id, estimate.usd), "train_examples": used})
        journal = TrialJournal(trial, sweep.tracker, run_id, sweep.experiment.study_name)
        on_epoch = epoch_logger(
            sweep.tracker, run_id, trial, spec, sweep.stopper, sweep.live.epoch(spec)
        )
        submitting = True  # from here the pool may hold the trial, and it may train
        future = pool.submit(
            run_with_heartbeat,
            sweep.handle,
            trial,
            spec,
            sweep.data,
            sweep.backend,
            on_epoch,
            journal,
        )
    except BaseException as exc:  # before the pool has it: no one else would settle the trial
        _not_launched(sweep, Launched(trial, spec, run_id, Future()), exc, submitting)
        raise
    return Launched(trial, spec, run_id, future)


def _not_launched(sweep: Sweep, launched: Launched, exc: BaseException, trained: bool) -> None:
    """A trial cut short on its way to the pool by Ctrl-C or a signal, or by its run that could
    not open (the tracking server gone): failed, settled and queued again. Any other error is a
    bug: the trial is left RUNNING, for the next start to fail and run again."""
    if isinstance(exc, KeyboardInterrupt):
        interrupted(sweep, launched, trained=trained)
    elif server_unreachable(exc) is not None:
        fail_raised(sweep, launched, exc, trained=trained)

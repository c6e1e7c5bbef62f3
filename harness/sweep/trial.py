"""One trial: fine-tune, score once on the test set; and the threads trials run in.

Thread safety: `run_trial` runs in a trial worker thread where the backend allows several trials
at once (`Capabilities.max_concurrency > 1`), else in the sweep's own thread. From a worker
thread it writes only to its own trial: per-epoch user attributes (`epoch_logger`), journal notes
(`TrialJournal`), heartbeats and MLflow metrics of its own run. Optuna's RDB storage and
`MlflowClient` are safe for that; asking, telling and opening or closing runs stay with the
sweep's thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from optuna.trial import Trial

from harness.backends.base import Backend
from harness.records import EpochResult, PreparedData, TrialResult, TrialSpec
from harness.scoring import score
from harness.sweep.stopping import FrontStopper
from harness.sweep.study import StudyHandle, heartbeat
from harness.tracking.journal import TrialJournal
from harness.tracking.record import epoch_attrs
from harness.tracking.tracker import Tracker

EpochLogger = Callable[[EpochResult], bool]


def run_trial(
    spec: TrialSpec,
    data: PreparedData,
    backend: Backend,
    on_epoch: EpochLogger,
    journal: TrialJournal | None = None,
) -> TrialResult:
    """Fine-tune one configuration, then score it once on the test set."""
    started = time.perf_counter()
    model = backend.fine_tune(spec, data, on_epoch, journal)
    predictions, eval_cost = backend.predict(model.model_ref, data.test.texts, data.labels)
    metrics = score(data.test.labels, [p.label for p in predictions], data.labels, data.ordinal)
    return TrialResult(
        spec=spec,
        model=model,
        metrics=metrics,
        eval_cost=eval_cost,
        wall_seconds=time.perf_counter() - started,
        predictions=tuple(predictions),
    )


def run_with_heartbeat(
    handle: StudyHandle,
    trial: Trial,
    spec: TrialSpec,
    data: PreparedData,
    backend: Backend,
    on_epoch: EpochLogger,
    journal: TrialJournal,
) -> TrialResult:
    """`run_trial` while the storage hears this worker is alive (crash recovery needs it)."""
    with heartbeat(handle, trial):
        return run_trial(spec, data, backend, on_epoch, journal)


def set_attrs(trial: Trial, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def epoch_logger(
    tracker: Tracker,
    run_id: str | None,
    trial: Trial,
    spec: TrialSpec,
    stopper: FrontStopper | None,
    notify: Callable[[EpochResult], None] | None = None,
) -> EpochLogger:
    """Log each epoch to MLflow and the study, show it (`notify`: the live view); ask the
    stopper whether to go on."""
    seen: list[EpochResult] = []

    def on_epoch(epoch: EpochResult) -> bool:
        seen.append(epoch)
        tracker.log_epoch(run_id, epoch)
        # Kept in the study as well as in MLflow so reports can draw per-epoch curves from either.
        set_attrs(trial, epoch_attrs(trial.user_attrs, epoch))
        if notify is not None:
            notify(epoch)
        return stopper is not None and stopper.should_stop(seen, spec.n_epochs)

    return on_epoch


def executor(backend: Backend) -> Any:
    """Worker threads for remote backends; the calling thread itself for one-at-a-time ones, so
    Ctrl-C stops local training at once instead of waiting for a worker thread to finish."""
    if backend.capabilities.max_concurrency > 1:
        return _DaemonExecutor()
    return _InlineExecutor()


class _DaemonExecutor:
    """A thread per trial (the sweep launches at most `max_concurrency` at once), each a daemon:
    on Ctrl-C or SIGTERM the sweep fails and requeues the trials in flight and exits, instead of
    waiting, as a thread pool would, for remote jobs that may run for hours to end. A requeued
    trial resumes its paid job in the next sweep."""

    def __enter__(self) -> _DaemonExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def submit(self, fn: Callable[..., TrialResult], *args: Any) -> Future[TrialResult]:
        future: Future[TrialResult] = Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to _collect with the rest
                future.set_exception(exc)

        threading.Thread(target=run, name="trial", daemon=True).start()
        return future


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

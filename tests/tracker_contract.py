"""One contract suite for every `Tracker` (`harness.tracking.tracker`), as for the backends.

A test module subclasses `TrackerContract` and provides a `case` fixture (a `TrackerCase`: how
to build the tracker, how to read back what it recorded). Every test then runs against that
tracker, so what the protocol promises holds for the MLflow tracker and the null one alike:

- a study opens one run, and the same run is reopened (by id, or by the tracker given it);
- a trial's run gets its params, one metric per epoch at step = epoch, and ends FINISHED, or
  FAILED / KILLED with the reason;
- every method taking a run id does nothing with None;
- `mark_pareto` is idempotent and skips runs that do not exist;
- trial threads logging concurrently each write into their own run only;
- a tracker that records nothing (`records=False`) returns None ids and writes no file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.records import (
    Cost,
    EpochResult,
    Metrics,
    Prediction,
    PreparedData,
    TrainedModel,
    TrialResult,
    TrialSpec,
)
from harness.tracking.tracker import Tracker


@dataclass
class RunView:
    """What a store holds of one run, as the contract reads it back."""

    status: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # metric -> [(step, value)], in step order
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # artifact file -> its text


@dataclass
class TrackerCase:
    """What the contract needs to know about one tracker under test."""

    make: Callable[[str | None], Tracker]  # a tracker given the study's parent run id (or None)
    data: PreparedData
    records: bool  # False: a tracker that records nothing (every id None, no file written)
    read: Callable[[str], RunView]  # what was recorded of a run (only called where `records`)
    folder: Path  # where the tracker may write: nothing appears here where not `records`


def _spec(number: int) -> TrialSpec:
    return TrialSpec(number, 2, 1.0, 8, "all-MiniLM-L6-v2", seed=number)


def _epoch(epoch: int, accuracy: float) -> EpochResult:
    return EpochResult(epoch, accuracy, 0.5, 0.6, Cost(usd=0.001 * epoch))


def _result(spec: TrialSpec, data: PreparedData, accuracy: float = 0.75) -> TrialResult:
    epochs = (_epoch(1, 0.5), _epoch(2, accuracy))
    return TrialResult(
        spec=spec,
        model=TrainedModel(model_ref=f"model-{spec.number}", epochs=epochs, train_cost=Cost(0.002)),
        metrics=Metrics(
            accuracy=accuracy, macro_f1=0.7, weighted_f1=0.7, mae=None, n_examples=len(data.test)
        ),
        eval_cost=Cost(usd=0.0005),
        wall_seconds=1.5,
        predictions=tuple(Prediction(label, 0.9) for label in data.test.labels),
    )


class TrackerContract:
    """Subclass with a `case` fixture returning a `TrackerCase`."""

    def test_a_study_opens_one_run_and_reopens_it(self, case: TrackerCase) -> None:
        tracker = case.make(None)
        study = tracker.start_study("contract", {"n_epochs": [1, 2]})
        if not case.records:
            assert study is None
            return
        assert study is not None and case.read(study).status == "RUNNING"
        assert tracker.start_study("contract", {}, run_id=study) == study  # resumed: by id
        tracker.finish_study({"notes.txt": "done"})
        assert case.read(study).status == "FINISHED"
        assert case.read(study).texts["notes.txt"] == "done"
        # Another worker (or a resumed sweep) given the run id reopens the same run.
        again = case.make(study)
        assert again.start_study("contract", {}) == study
        assert case.read(study).status == "RUNNING"
        again.finish_study()
        again.finish_study()  # idempotent
        assert case.read(study).status == "FINISHED"

    def test_a_trial_logs_its_epochs_and_finishes(self, case: TrackerCase) -> None:
        tracker = case.make(None)
        tracker.start_study("contract", {})
        spec = _spec(3)
        run = tracker.start_trial(spec, "memory", metrics={"estimated_cost_usd": 0.01})
        for epoch in (_epoch(1, 0.5), _epoch(2, 0.75)):
            tracker.log_epoch(run, epoch)
        tracker.finish_trial(run, _result(spec, case.data), case.data)
        if not case.records:
            assert run is None
            return
        assert run is not None
        view = case.read(run)
        assert view.status == "FINISHED"
        assert view.params["n_epochs"] == "2" and view.params["backend"] == "memory"
        assert view.metrics["valid_accuracy"] == [(1, 0.5), (2, 0.75)]
        assert view.metrics["estimated_cost_usd"] == [(0, 0.01)]
        assert view.metrics["test_accuracy"][-1][1] == 0.75

    @pytest.mark.parametrize("status", ["FAILED", "KILLED"])
    def test_a_failed_trial_ends_with_its_reason(self, case: TrackerCase, status: str) -> None:
        tracker = case.make(None)
        tracker.start_study("contract", {})
        run = tracker.start_trial(_spec(1), "memory")
        tracker.fail_trial(run, "BackendError: the job failed", status)
        tracker.fail_trial("no-such-run", "nothing to fail")  # a run that is gone: no error
        if case.records:
            assert run is not None
            view = case.read(run)
            assert view.status == status
            assert view.tags["failure_reason"] == "BackendError: the job failed"

    def test_every_run_id_method_does_nothing_with_none(self, case: TrackerCase) -> None:
        tracker = case.make(None)
        tracker.start_study("contract", {})
        spec = _spec(0)
        tracker.log_epoch(None, _epoch(1, 0.5))
        tracker.tag(None, "key", "value")
        tracker.log_step_metrics(None, {"step_train_loss": 1.0}, step=3)
        tracker.log_text(None, "text", "note.txt")
        tracker.log_model_files(None, {"model": str(case.folder)})
        tracker.finish_trial(None, _result(spec, case.data), case.data)
        tracker.fail_trial(None, "reason")
        tracker.mark_pareto({})

    def test_pareto_marking_is_idempotent(self, case: TrackerCase) -> None:
        tracker = case.make(None)
        tracker.start_study("contract", {})
        runs = [tracker.start_trial(_spec(n), "memory") for n in (0, 1)]
        if not case.records:
            assert runs == [None, None]
            return
        first, second = (r for r in runs if r is not None)
        marks = {first: True, second: False, "no-such-run": True}
        tracker.mark_pareto(marks)
        tracker.mark_pareto(marks)
        assert case.read(first).tags["pareto"] == "true"
        assert case.read(second).tags["pareto"] == "false"
        tracker.mark_pareto({first: False})
        assert case.read(first).tags["pareto"] == "false"

    def test_trial_threads_log_into_their_own_runs(self, case: TrackerCase) -> None:
        tracker = case.make(None)
        tracker.start_study("contract", {})
        numbers = range(4)
        runs = [tracker.start_trial(_spec(n), "memory") for n in numbers]
        epochs = 5
        # Every thread logs at the same moments (the barrier), so a tracker that kept a
        # "current run" anywhere, or shared an unguarded client, would mix the runs up.
        barrier = threading.Barrier(len(runs))
        errors: list[BaseException] = []

        def log(number: int, run: str | None) -> None:
            try:
                for epoch in range(1, epochs + 1):
                    barrier.wait(timeout=30)
                    tracker.log_epoch(run, _epoch(epoch, number / 10 + epoch / 100))
                    tracker.log_step_metrics(run, {"step_owner": float(number)}, step=epoch)
                    tracker.tag(run, "owner", str(number))
                tracker.log_text(run, f"trial {number}", "owner.txt")
            except BaseException as exc:  # reported below: a thread's failure fails the test
                errors.append(exc)

        threads = [
            threading.Thread(target=log, args=(n, r)) for n, r in zip(numbers, runs, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        if not case.records:
            return
        for number, run in zip(numbers, runs, strict=True):
            assert run is not None
            view = case.read(run)
            steps = [step for step, _ in view.metrics["valid_accuracy"]]
            values = [value for _, value in view.metrics["valid_accuracy"]]
            assert steps == list(range(1, epochs + 1))
            assert values == pytest.approx([number / 10 + e / 100 for e in steps])
            assert view.metrics["step_owner"] == [(e, float(number)) for e in range(1, epochs + 1)]
            assert view.tags["owner"] == str(number)
            assert view.texts["owner.txt"] == f"trial {number}"

    def test_a_tracker_that_records_nothing_writes_nothing(self, case: TrackerCase) -> None:
        before = set(case.folder.rglob("*"))
        tracker = case.make(None)
        study = tracker.start_study("contract", {})
        run = tracker.start_trial(_spec(0), "memory")
        tracker.log_epoch(run, _epoch(1, 0.5))
        tracker.finish_trial(run, _result(_spec(0), case.data), case.data)
        tracker.mark_pareto({run: True} if run else {})
        assert tracker.close_abandoned_runs(set()) == 0
        tracker.finish_study({"report.md": "# report"})
        if case.records:
            assert study is not None and run is not None
            assert set(case.folder.rglob("*")) != before
        else:
            assert (study, run) == (None, None)
            assert set(case.folder.rglob("*")) == before
            assert not tracker.shares_files

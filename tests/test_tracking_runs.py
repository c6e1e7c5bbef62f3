"""The MLflow tracker against a real (sqlite) store: what it closes when a worker died."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import load_experiment
from harness.records import TrialSpec
from harness.tracking.runs import MlflowTracker
from tests.conftest import prepared, review_rows, write_experiment


def test_runs_whose_worker_died_before_recording_them_are_closed(
    tmp_path: Path, tiny_csv: Path
) -> None:
    experiment = load_experiment(str(write_experiment(tmp_path, tiny_csv)))
    data = prepared(review_rows(20), ("negative", "positive"), "d" * 64, "tiny")
    tracker = MlflowTracker(experiment, data, None)
    parent = tracker.start_study(experiment.study_name, {})
    spec = TrialSpec(0, 1, 1.0, 8, "all-MiniLM-L6-v2")
    abandoned = tracker.start_trial(spec, "local")  # its trial is no longer running
    alive = tracker.start_trial(TrialSpec(3, 1, 1.0, 8, "all-MiniLM-L6-v2"), "local")

    assert tracker.close_abandoned_runs(running={3}) == 1
    status = {run_id: tracker.client.get_run(run_id).info.status for run_id in (parent, alive)}
    assert status == {parent: "RUNNING", alive: "RUNNING"}
    closed = tracker.client.get_run(abandoned)
    assert closed.info.status == "KILLED" and "worker died" in closed.data.tags["failure_reason"]
    assert tracker.close_abandoned_runs(running={3}) == 0


def test_a_checkpoint_run_being_recorded_is_left_open_until_its_grace_is_over(
    tmp_path: Path, tiny_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker starting while another recorded an epoch checkpoint closed that live run KILLED
    # "worker died": a checkpoint's trial is added to the study only after its run is logged,
    # so its number is not yet among the study's trials, running or not.
    from harness.tracking import runs

    experiment = load_experiment(str(write_experiment(tmp_path, tiny_csv)))
    data = prepared(review_rows(20), ("negative", "positive"), "d" * 64, "tiny")
    tracker = MlflowTracker(experiment, data, None)
    tracker.start_study(experiment.study_name, {})
    recording = tracker.start_trial(TrialSpec(5, 1, 1.0, 8, "all-MiniLM-L6-v2"), "local")

    assert tracker.close_abandoned_runs(running=set(), numbered=5) == 0
    assert tracker.client.get_run(recording).info.status == "RUNNING"
    monkeypatch.setattr(runs, "RECORDING_GRACE_S", 0)  # its worker died while recording it
    assert tracker.close_abandoned_runs(running=set(), numbered=5) == 1
    assert tracker.client.get_run(recording).info.status == "KILLED"

"""A whole small sweep on the real MiniLM, asserted through MlflowClient and the Optuna storage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness.backends.base import NullProgress
from harness.config import load_experiment
from harness.data.prepare import prepare_experiment
from harness.errors import BudgetExceeded
from harness.records import Cost, TrialResult, TrialSpec
from harness.report.build import build_report
from harness.scoring import unpack_correct
from harness.sweep.loop import run_sweep
from harness.sweep.search_space import load_search_space
from harness.sweep.study import ask, open_study, recover_crashed_trials
from tests.cli_runner import run_cli
from tests.conftest import write_experiment

pytestmark = pytest.mark.slow

PARAMS = {
    "n_epochs",
    "learning_rate_multiplier",
    "batch_size",
    "base_model",
    "backend",
    "train_examples",
}
METRICS = {
    "test_accuracy",
    "test_macro_f1",
    "test_weighted_f1",
    "cost_usd",
    "train_cost_usd",
    "eval_cost_usd",
    "trained_tokens",
    "wall_seconds",
}


class RecordingView:
    """A SweepView that remembers what it was told."""

    def __init__(self) -> None:
        self.progress = NullProgress()
        self.live = None  # no live events (`SweepView.live`)
        self.started: list[TrialSpec] = []
        self.finished: list[TrialResult] = []
        self.failed: list[tuple[TrialSpec, str]] = []
        self.sweeps: list[tuple[int, int]] = []

    def sweep_started(self, study_name: str, done: int, target: int) -> None:
        self.sweeps.append((done, target))

    def trial_started(self, spec: TrialSpec, estimate: Cost) -> None:
        self.started.append(spec)

    def trial_finished(self, result: TrialResult) -> None:
        self.finished.append(result)

    def trial_failed(self, spec: TrialSpec, reason: str) -> None:
        self.failed.append((spec, reason))

    def message(self, text: str) -> None:
        pass


def _runs(client: MlflowClient) -> tuple[list, list]:
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_sweep_tracks_every_trial_and_resumes(tmp_path: Path, tiny_csv: Path) -> None:
    path = write_experiment(tmp_path, tiny_csv)
    experiment = load_experiment(str(path))
    view = RecordingView()

    outcome = run_sweep(experiment, view)

    assert len(outcome.results) == 2 and not outcome.failures
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    trained = [t for t in complete if "checkpoint_of" not in t.user_attrs]
    checkpoints = [t for t in complete if "checkpoint_of" in t.user_attrs]
    assert len(trained) == 2
    for trial in trained:
        accuracy, cost = trial.values
        assert 0.0 <= accuracy <= 1.0 and cost > 0.0
        assert len(trial.user_attrs["valid_accuracy_by_epoch"]) == trial.params["n_epochs"]
    # Every epoch before the last is kept and scored: an extra point of the front, paid for
    # by scoring it (spent_usd), not by training again.
    assert len(checkpoints) == sum(t.params["n_epochs"] - 1 for t in trained)
    # Every model records which validation examples it got right, so the report compares them
    # paired; a checkpoint records its own epoch's.
    n_valid = len(prepare_experiment(experiment)[0].validation)
    for trial in complete:
        right = unpack_correct(trial.user_attrs["valid_correct"])
        assert right.size == n_valid and right.mean() == pytest.approx(trial.values[0])
    report = build_report(experiment)
    assert report.steps and all(s.valid is not None and s.valid.paired for s in report.steps)
    assert not any("unpaired" in note for note in report.notes)
    for checkpoint in checkpoints:
        parent = study.trials[checkpoint.user_attrs["checkpoint_of"]]
        assert checkpoint.params == parent.params and checkpoint.user_attrs["epochs_run"] == 1
        assert 0.0 < checkpoint.user_attrs["spent_usd"] < checkpoint.values[1] < parent.values[1]
        assert Path(checkpoint.user_attrs["model_ref"]).name == "epoch-1"
        # A checkpoint off the front can never be the one to pick: its weights are deleted.
        on_front = checkpoint.number in {t.number for t in study.best_trials}
        assert Path(checkpoint.user_attrs["model_ref"]).is_dir() == on_front
    # `trials --json` says which checkpoints' weights are gone, rather than point at nothing.
    listed = {r["number"]: r for r in json.loads(run_cli("trials", str(path), "--json").stdout)}
    for checkpoint in checkpoints:
        on_front = checkpoint.number in {t.number for t in study.best_trials}
        assert listed[checkpoint.number]["model_deleted"] is not on_front
    assert not any(listed[t.number]["model_deleted"] for t in trained)

    client = MlflowClient("sqlite:///mlruns/mlflow.db")
    parents, children = _runs(client)
    assert len(parents) == 1 and len(children) == len(complete)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "study tiny"
    assert parent.inputs.dataset_inputs, "the dataset is logged as an MLflow input"
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # The trial's page shows the data it trained on too, as the same dataset.
        (used,) = child.inputs.dataset_inputs
        assert used.dataset.digest == parent.inputs.dataset_inputs[0].dataset.digest
        assert child.info.run_name.startswith("t00") and " ep=" in child.info.run_name
        assert set(child.data.params) >= PARAMS
        assert set(child.data.metrics) >= METRICS
        assert child.data.tags["pareto"] in {"true", "false"}
        # What it takes to reproduce the run.
        for tag in ("harness.seed", "harness.data_digest", "harness.versions.torch"):
            assert child.data.tags.get(tag), tag
        history = client.get_metric_history(child.info.run_id, "valid_accuracy")
        epochs = int(child.data.metrics["epochs_trained"])
        assert [m.step for m in history] == list(range(1, epochs + 1))
        if child.data.tags.get("harness.checkpoint_of"):
            assert " @ epoch " in child.info.run_name
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {
            "predictions.csv",
            "confusion_matrix.png",
            "classification_report.txt",
            "config.yaml",
        } <= artifacts
    assert any(c.data.tags["pareto"] == "true" for c in children)

    # The same command again resumes: nothing new to run, same parent run.
    again = run_sweep(load_experiment(str(path)), RecordingView())
    assert again.results == [] and again.parent_run_id == parent.info.run_id
    # --add extends the same study by one trial, logged under the same parent.
    more = run_sweep(load_experiment(str(path)), RecordingView(), add_trials=1)
    assert len(more.results) == 1 and more.results[0].spec.number == len(complete)
    parents, children = _runs(client)
    total = len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(parents) == 1 and len(children) == total > len(complete)


def test_budget_stops_the_sweep_before_spending(tmp_path: Path, tiny_csv: Path) -> None:
    path = write_experiment(tmp_path, tiny_csv, budget_usd=1e-9)
    # The worst case exceeds the budget: without confirmation nothing starts, nothing is logged.
    with pytest.raises(BudgetExceeded, match="over budget_usd"):
        run_sweep(load_experiment(str(path)), RecordingView())
    assert not Path("mlruns/mlflow.db").exists()
    # Confirmed (--yes): the first trial's own reservation already breaks the budget.
    outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda w, b: True)
    assert outcome.results == []
    assert outcome.stopped is not None and "budget" in outcome.stopped
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    assert not study.get_trials(states=(TrialState.COMPLETE,))


def _dead_workers_trial(tmp_path: Path, tiny_csv: Path, **attrs: Any) -> tuple[Any, Any]:
    """A study whose one RUNNING trial belongs to a worker on this machine that has exited."""
    path = write_experiment(tmp_path, tiny_csv)
    experiment = load_experiment(str(path))
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    handle = open_study(experiment, space)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert dead.pid != os.getpid()
    trial = ask(handle, space)
    for key, value in {"host": socket.gethostname(), "pid": dead.pid, **attrs}.items():
        trial.set_user_attr(key, value)
    return handle, trial


def test_crashed_worker_trial_is_failed_and_retried(tmp_path: Path, tiny_csv: Path) -> None:
    handle, trial = _dead_workers_trial(tmp_path, tiny_csv)

    failed = recover_crashed_trials(handle)

    assert [t.number for t in failed] == [trial.number]
    waiting = handle.study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == trial.params
    # It says why it failed, and its retry carries no failure of its own (found in a real run:
    # a SIGKILLed trial had no reason, and completed retries kept their predecessor's).
    assert failed[0].user_attrs["failure_reason"].startswith("its worker stopped while it ran")
    assert "failure_reason" not in waiting[0].user_attrs


def test_a_retry_waiting_to_run_shows_no_run_of_its_own(tmp_path: Path, tiny_csv: Path) -> None:
    """Found walking a killed sweep: `harness trials --json` gave the queued retry the killed
    trial's MLflow run (closed KILLED), its validation curve and its dead worker, as if the
    retry had run; so did optuna-dashboard's trial list. A retry has run nothing until it starts:
    the failed trial keeps its run and curve, the retry has none."""
    dead_run = "0123456789abcdef0123456789abcdef"
    handle, _ = _dead_workers_trial(
        tmp_path,
        tiny_csv,
        mlflow_run_id=dead_run,
        valid_accuracy_by_epoch=[0.5],
        cost_usd_by_epoch=[0.0001],
    )
    recover_crashed_trials(handle)

    result = run_cli("trials", str(tmp_path / "tiny.yaml"), "--json")
    assert result.exit_code == 0, result.output
    failed, retry = json.loads(result.stdout)
    assert (failed["state"], failed["mlflow_run_id"]) == ("fail", dead_run)
    assert failed["valid_accuracy_by_epoch"] == [0.5]
    assert retry["state"] == "waiting"
    assert retry["mlflow_run_id"] is None
    assert retry["valid_accuracy_by_epoch"] == [] and retry["cost_usd_by_epoch"] == []
    waiting = handle.study.get_trials(states=(TrialState.WAITING,))[0]
    assert "pid" not in waiting.user_attrs and "host" not in waiting.user_attrs


def test_a_launch_never_sees_a_paid_trial_failed_but_not_yet_requeued(
    tmp_path: Path, tiny_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a CI run of three workers: while one survivor failed a dead worker's trial and had
    not yet queued it again, another counted the study short of `n_trials` and asked for a new
    trial; the requeued paid job then ran past the target too (five trials for four). Failing
    and requeuing hold the `launch` lock, so a launch sees the trial running or waiting."""
    from harness.sweep import study as study_module
    from harness.sweep.locks import study_lock
    from harness.sweep.shared import paid_job_waiting, toward_target

    handle, _ = _dead_workers_trial(tmp_path, tiny_csv, **{"journal.job_key": "k"})  # paid job
    seen: list[tuple[int, bool]] = []
    real_requeue = study_module.requeue

    def launch_meanwhile() -> None:
        with study_lock(handle.study, "launch"):  # what `_launch` counts before it asks
            seen.append((toward_target(handle), paid_job_waiting(handle)))

    other = threading.Thread(target=launch_meanwhile)

    def slow_requeue(study: optuna.Study, failed: optuna.trial.FrozenTrial) -> None:
        other.start()
        other.join(timeout=1.0)  # a launch that is not kept out gets in here
        real_requeue(study, failed)

    monkeypatch.setattr(study_module, "requeue", slow_requeue)
    recover_crashed_trials(handle)
    other.join(timeout=30)

    assert seen == [(0, True)], "the launch saw the paid trial waiting to run, nothing less"


def test_a_trial_that_cannot_reach_the_front_stops_after_one_epoch(
    tmp_path: Path, tiny_csv: Path
) -> None:
    space = {"n_epochs": 2, "learning_rate_multiplier": {"type": "float", "low": 2.0, "high": 6.0}}
    path = write_experiment(tmp_path, tiny_csv, space={**space, "batch_size": 8})
    experiment = load_experiment(str(path))
    search = load_search_space(experiment.resolve_path(experiment.config.search_space))
    handle = open_study(experiment, search)
    # Two earlier trials whose models were perfect on validation for almost nothing.
    for lr in (2.0, 3.0):
        handle.study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate_multiplier": lr},
                distributions=search.distributions,
                values=[1.0, 1e-9],
                user_attrs={"valid_accuracy_by_epoch": [0.9, 1.0], "cost_usd_by_epoch": [0, 1e-9]},
            )
        )
    view = RecordingView()

    outcome = run_sweep(load_experiment(str(path)), view, add_trials=1)

    [result] = outcome.results
    assert len(result.model.epochs) == 1 and result.model.stopped_early
    trial = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db").trials[-1]
    assert trial.user_attrs["epochs_run"] == 1 and trial.user_attrs["stopped_early"]
    _, [child] = _runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert child.data.tags["stopped_early"] == "true"

    # Switched off, the same trial runs both epochs.
    off = run_sweep(
        load_experiment(str(path), overrides=["study.early_stopping=false"]),
        RecordingView(),
        add_trials=1,
    )
    assert len(off.results[0].model.epochs) == 2 and not off.results[0].model.stopped_early

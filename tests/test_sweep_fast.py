"""The real sweep loop on the in-memory backend (`tests/memory_backend.py`): the study, budget
ledger, admission, checkpoints, resume, failures and the report, in seconds. The fast tier's
guard of the loop; the slow tier runs the same paths on real models and servers."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness.backends.base import Capabilities, Estimate
from harness.config import load_experiment
from harness.data.prepare import prepare_experiment
from harness.records import Cost, EpochResult, PreparedData, TrialSpec
from harness.report.build import build_report
from harness.scoring import unpack_correct
from harness.sweep import session
from harness.sweep.budget import ledger_usd
from harness.sweep.live import SweepStatus
from harness.sweep.loop import run_sweep
from harness.tracking.record import TrialRecord
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import review_rows, write_csv, write_experiment
from tests.memory_backend import MemoryBackend
from tests.test_sweep import RecordingView

SPACE = {
    "n_epochs": {"type": "int", "low": 1, "high": 3},
    "learning_rate_multiplier": {"type": "float", "low": 0.5, "high": 4.0, "log": True},
    "batch_size": 8,
}


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> MemoryBackend:
    """One in-memory backend every sweep of the test loads (its models outlive a sweep, as a
    local backend's folders do)."""
    return _use_backend(monkeypatch, MemoryBackend())


def _use_backend(monkeypatch: pytest.MonkeyPatch, memory: MemoryBackend) -> MemoryBackend:
    """Every sweep of the test loads `memory`, and tracks into this test's own store."""
    monkeypatch.setattr(session, "load_backend", lambda config, progress=None: memory)
    # Absolute: MLflow caches stores by URI, so a relative one could reach an earlier test's.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")
    return memory


def _experiment(tmp_path: Path, n_trials: int, **overrides: object) -> Path:
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    study = {"n_trials": n_trials, "sampler": {"kind": "random"}}
    return write_experiment(tmp_path, data, SPACE, study=study, **overrides)


def _study() -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")


def _records(states: tuple[TrialState, ...] = (TrialState.COMPLETE,)) -> list[TrialRecord]:
    return [TrialRecord.from_attrs(t.user_attrs) for t in _study().get_trials(states=states)]


def test_a_sweep_records_trials_checkpoints_and_a_paired_report(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    path = _experiment(tmp_path, 5)
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 5 and not outcome.failures
    # Each trial trained once (checkpoints take trial numbers of their own, never trained).
    assert sorted(backend.trained) == sorted(r.spec.number for r in outcome.results)
    records = _records()
    trials = [r for r in records if not r.is_checkpoint]
    checkpoints = [r for r in records if r.is_checkpoint]
    assert len(trials) == 5
    # Every epoch before the last of a trial that ran on is a point of its own.
    assert len(checkpoints) == sum(max(0, (r.epochs_run or 0) - 1) for r in trials)
    for record in records:
        assert record.valid_correct is not None
        right = unpack_correct(record.valid_correct)
        assert right.mean() == pytest.approx(record.valid_accuracy)
    # The ledger counts each trial once and each checkpoint's scoring only.
    spent = sum(r.spent for r in records)
    assert spent == pytest.approx(
        sum(r.total_cost.usd for r in outcome.results)
        + sum(r.spent_usd or 0.0 for r in checkpoints)
    )
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == len(records) + 1  # one per trial and checkpoint, plus the study's
    report = build_report(load_experiment(str(path)))
    assert all(s.valid is not None and s.valid.paired for s in report.steps)
    assert report.recommendation.text.startswith(("Choose", "Don't fine-tune"))
    # Trials and their epoch checkpoints counted apart (found in a real run: "Based on 4
    # completed trials" for 2 trials run and 2 checkpoints).
    from harness.report.build import summary_lines

    assert checkpoints
    based = f"Based on 5 completed trials and {len(checkpoints)} epoch checkpoint"
    assert based in " ".join(summary_lines(report))


def test_the_budget_stops_the_sweep_before_it_overspends(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    path = _experiment(tmp_path, 8, budget_usd=0.004)
    outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda *_: True)
    assert outcome.stopped is not None and "budget" in outcome.stopped
    spent = sum(r.spent for r in _records())
    assert 0 < spent <= 0.004
    assert len(outcome.results) < 8
    # It says how to go on: the study keeps its recorded budget, so editing the file would not.
    assert "--set budget_usd=AMOUNT" in outcome.stopped
    before = len(_records())
    edited_file = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**edited_file, "budget_usd": 1.0}))
    edited = run_cli("sweep", str(path), "--yes")
    assert "budget_usd" in edited.stderr, edited.output  # named as differing, not read
    assert len(_records()) == before, "the edited file's budget was not read"
    again = run_cli("sweep", str(path), "--yes", "--set", "budget_usd=1.0")
    assert again.exit_code == 0, again.output
    assert len([r for r in _records() if not r.is_checkpoint]) == 8


def test_a_resumed_sweep_trains_only_what_is_missing(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    path = _experiment(tmp_path, 2)
    first = run_sweep(load_experiment(str(path)), RecordingView())
    again = run_sweep(load_experiment(str(path)), RecordingView(), add_trials=2)
    assert len(first.results) == 2 and len(again.results) == 2
    assert again.parent_run_id == first.parent_run_id
    trained = [r.spec.number for r in first.results + again.results]
    assert sorted(backend.trained) == sorted(trained)
    assert len([r for r in _records() if not r.is_checkpoint]) == 4


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    backend.fail = frozenset({2})  # the second trial's job fails
    path = _experiment(tmp_path, 3)
    view = RecordingView()
    outcome = run_sweep(load_experiment(str(path)), view)
    assert [spec.number for spec, _ in view.failed] == [backend.trained[1]]
    assert "the synthetic job failed" in view.failed[0][1]
    assert len(outcome.results) == 3
    failed = _records((TrialState.FAIL,))
    assert len(failed) == 1 and "synthetic job failed" in (failed[0].failure_reason or "")
    # `trials --json` shows the ledger's entry of each trial, so a script adds up what `studies`
    # says was spent (found in a real run: a failed trial showed only `spent_usd: null`).
    shown = json.loads(run_cli("trials", "tiny", "--json").output)
    (cut,) = [row for row in shown if row["state"] == "fail"]
    assert cut["cost"]["spent_usd"] is None and cut["cost"]["ledger_usd"] > 0
    studies = json.loads(run_cli("studies", "--json").output)
    spent = sum(row["cost"]["ledger_usd"] for row in shown)
    assert spent == pytest.approx(studies[0]["spent_usd"], rel=1e-9)


def test_checkpoints_record_the_training_rows_their_trial_used(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Issue 23: `harness trials` showed a checkpoint at the size asked for (800) beside its trial
    # at the size used (the training split's, 120 rows here).
    space = {**SPACE, "n_epochs": 2, "train_examples": 800}
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    study = {"n_trials": 1, "sampler": {"kind": "random"}}
    path = write_experiment(tmp_path, data, space, study=study)
    run_sweep(load_experiment(str(path)), RecordingView())
    records = _records()
    (trial,) = [r for r in records if not r.is_checkpoint]
    (checkpoint,) = [r for r in records if r.is_checkpoint]
    assert trial.train_examples is not None and trial.train_examples < 800
    assert checkpoint.train_examples == trial.train_examples
    # Its MLflow run says the size used too (an absolute URI: MLflow caches stores by it).
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    names = sorted(r.info.run_name for r in runs if "n=" in r.info.run_name)
    assert len(names) == 2 and all(f"n={trial.train_examples}" in name for name in names), names
    # `harness trials` reads the records: every row says the rows used.
    shown = json.loads(run_cli("trials", str(path), "--json").output)
    assert [row["train_examples_used"] for row in shown] == [trial.train_examples] * 2


def test_a_failed_trial_shows_the_training_rows_it_used_as_its_mlflow_run_does(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found walking a sweep whose jobs failed: the MLflow run was named `t000 ... n=180` (the
    # split's rows, what the job was given), `harness trials` showed `n` 720 for the same trial
    # (the size asked for) and `--json` no size used; only a completed trial recorded it.
    backend.fail = frozenset({1})
    space = {**SPACE, "n_epochs": 1, "train_examples": 800}
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    path = write_experiment(tmp_path, data, space, study={"n_trials": 1})
    run_sweep(load_experiment(str(path)), RecordingView())
    (failed,) = _study().get_trials(states=(TrialState.FAIL,))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.get_run(TrialRecord.from_attrs(failed.user_attrs).mlflow_run_id or "")
    used = int(run.data.params["train_examples"])
    assert used < 800 and f"n={used}" in (run.info.run_name or "")
    shown = json.loads(run_cli("trials", str(path), "--json").output)
    row = next(r for r in shown if r["number"] == failed.number)
    assert row["train_examples_used"] == used
    table = run_cli("trials", str(path)).output
    line = next(x for x in table.splitlines() if x.split()[:2] == [str(failed.number), "fail"])
    assert line.split()[5] == str(used), table


def _one_two_epoch_trial(tmp_path: Path) -> Path:
    """An experiment of one 2-epoch trial: it leaves one checkpoint, a trial of its own."""
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    study = {"n_trials": 1, "sampler": {"kind": "random"}}
    return write_experiment(tmp_path, data, {**SPACE, "n_epochs": 2}, study=study)


def test_a_checkpoint_run_is_named_after_its_trial_when_another_worker_took_its_number(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found with three workers on one study: a checkpoint's run was named `t009 ... @ epoch 1 of
    # t006` while its trial was t010 (another worker asked for t009 meanwhile), so the MLflow UI
    # showed two runs named t009 and none t010.
    from harness.sweep import checkpoints

    path = _one_two_epoch_trial(tmp_path)
    name_of = checkpoints.checkpoint_run_name

    def another_worker_asks(*args: Any, **kwargs: Any) -> str:
        # Between the number the checkpoint expects and its `add_trial`: another worker's trial.
        other = _study()
        other.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
        return name_of(*args, **kwargs)

    monkeypatch.setattr(session, "checkpoint_run_name", another_worker_asks)
    run_sweep(load_experiment(str(path)), RecordingView())
    owners = {
        r.mlflow_run_id: t.number
        for t in _study().get_trials(states=(TrialState.COMPLETE,))
        if (r := TrialRecord.from_attrs(t.user_attrs)).mlflow_run_id
    }
    assert len(owners) == 2  # the trial and its checkpoint
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for run_id, number in owners.items():
        run = client.get_run(run_id)
        assert run.info.run_name.startswith(f"t{number:03d} "), (run.info.run_name, number)
        assert run.data.tags["harness.trial_number"] == str(number)


def test_a_worker_starting_while_another_records_a_checkpoint_leaves_its_run_alone(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker that starts closes the runs of workers that died before recording them; a live
    # worker's checkpoint run, open while it is scored and logged, has no trial yet and was
    # closed too: KILLED, "worker died before recording this run", then FINISHED by its worker.
    path = _one_two_epoch_trial(tmp_path)
    share = session._share_model

    def another_worker_starts(sweep: Any, run_id: Any, result: Any) -> None:
        session.Recovery(sweep.handle, sweep.tracker)(now=True, start=True)
        share(sweep, run_id, result)

    monkeypatch.setattr(session, "_share_model", another_worker_starts)
    run_sweep(load_experiment(str(path)), RecordingView())
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 3  # the study's, the trial's, its checkpoint's
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        assert "failure_reason" not in run.data.tags, run.info.run_name


class _Statuses(RecordingView):
    """A view that also takes the live events, and keeps every status line it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self
        self.statuses: list[SweepStatus] = []

    def trial_epoch(self, spec: TrialSpec, epoch: EpochResult) -> None:
        pass

    def trial_skipped(self, spec: TrialSpec | None, reason: str) -> None:
        pass

    def sweep_status(self, status: SweepStatus) -> None:
        self.statuses.append(status)


def test_the_last_status_line_counts_the_last_trials_checkpoints(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found in a real run: the demo ended on "spent $0.00306" while the ledger held $0.00308,
    # the last trial's checkpoint scoring left out of the last status line.
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    study = {"n_trials": 2, "sampler": {"kind": "random"}}
    path = write_experiment(tmp_path, data, {**SPACE, "n_epochs": 3}, study=study)
    view = _Statuses()
    run_sweep(load_experiment(str(path)), view)
    records = _records()
    assert any(r.is_checkpoint for r in records)
    assert view.statuses[-1].spent == pytest.approx(sum(r.spent for r in records), rel=1e-12)


def test_a_dead_workers_trial_runs_before_a_new_one(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found with two workers on one study: after one was SIGKILLed, the survivor started a new
    # trial first and took over the dead worker's only at its next heartbeat, 23 s later.
    import socket
    import subprocess
    import sys

    monkeypatch.setenv("HARNESS_HEARTBEAT_SECONDS", "5")
    path = _experiment(tmp_path, 3)
    train, dead_lr = backend.fine_tune, []

    def another_worker_dies(spec: TrialSpec, *args: object, **kwargs: object) -> object:
        if not dead_lr:  # during the first trial: a worker on this machine asks, then dies
            other = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
            trial = other.ask(_study().trials[0].distributions)
            gone = subprocess.Popen([sys.executable, "-c", "pass"])
            gone.wait()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", gone.pid)
            dead_lr.append(trial.params["learning_rate_multiplier"])
        return train(spec, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "fine_tune", another_worker_dies)
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    ran = [r.spec.learning_rate_multiplier for r in outcome.results]
    assert ran[1] == dead_lr[0], "the dead worker's trial is the next to run"
    assert len(ran) == 3


def test_an_interrupted_trial_is_queued_again_and_runs_first_on_resume(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in a real run: a SIGTERM'd local trial was failed but not queued again (a SIGKILL'd
    # one was), so the resumed sweep drew new parameters instead of running it.
    path = _experiment(tmp_path, 2)
    train, calls = backend.fine_tune, []

    def interrupted(spec: TrialSpec, *args: object, **kwargs: object) -> object:
        calls.append(spec.number)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C, SIGTERM and SIGHUP raise in a sweep
        return train(spec, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "fine_tune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_experiment(str(path)), RecordingView())
    (cut,) = _study().get_trials(states=(TrialState.FAIL,))
    (queued,) = _study().get_trials(states=(TrialState.WAITING,))
    assert queued.params == cut.params
    monkeypatch.setattr(backend, "fine_tune", train)
    again = run_sweep(load_experiment(str(path)), RecordingView())
    assert again.results[0].spec.learning_rate_multiplier == cut.params["learning_rate_multiplier"]
    # The retry completed: no failure of its own (it used to keep its predecessor's reason).
    rerun = _study().trials[queued.number]
    assert rerun.state == TrialState.COMPLETE and rerun.user_attrs.get("failure_reason") is None
    assert cut.user_attrs["failure_reason"] == "interrupted"


def test_an_interrupt_before_training_starts_leaves_nothing_running(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between being asked for and reaching the pool (its MLflow run opening, say), a trial
    # was left RUNNING by Ctrl-C or a signal on a loaded machine, for the next start to find.
    from harness.tracking.runs import MlflowTracker

    def interrupt(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(MlflowTracker, "start_trial", interrupt)
    study = _interrupted_sweep(tmp_path)
    assert backend.trained == []
    # Nothing trained, so nothing spent: its reservation used to stay in the ledger as spent.
    assert ledger_usd(study.get_trials()) == (0.0, 0.0)


def test_an_interrupt_while_a_trial_is_priced_leaves_nothing_running(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a SIGTERM test: a first local estimate calibrates the machine for seconds after
    # the trial is asked for; a signal then left the trial RUNNING and its sweep gone.
    def interrupt(*args: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(session.Sweep, "price", interrupt)
    study = _interrupted_sweep(tmp_path)
    assert ledger_usd(study.get_trials()) == (0.0, 0.0)  # nothing trained, nothing held


def test_a_signal_while_optuna_creates_a_trial_leaves_nothing_running(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by SIGINT to one of two workers: Optuna's `ask` had created the trial (RUNNING, no
    # parameters yet) when Ctrl-C came, so no one held it: it stayed RUNNING after the worker
    # exited, until another worker's heartbeat grace (or the next start) failed it.
    import signal

    from harness.sweep import admission

    real_ask = admission.ask

    def signalled(*args: Any) -> Any:
        asked = real_ask(*args)  # in the storage now, not yet returned
        signal.raise_signal(signal.SIGINT)
        return asked

    monkeypatch.setattr(admission, "ask", signalled)
    _interrupted_sweep(tmp_path)
    assert backend.trained == []


def test_a_signal_while_a_finished_trial_is_logged_leaves_nothing_running(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by SIGTERM to one of two workers on a shared PostgreSQL study: the trial had
    # trained and its model files were being sent to the tracking server when the signal came;
    # the loop had already let go of it, so the worker exited with the trial RUNNING in the
    # study, its MLflow run RUNNING, and its reservation held until another worker noticed.
    from harness.tracking.runs import MlflowTracker

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(MlflowTracker, "finish_trial", interrupt)
    study = _interrupted_sweep(tmp_path)
    (cut,) = study.get_trials(states=(TrialState.FAIL,))
    run = MlflowClient().get_run(cut.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"


def _tracking_server_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLflow server stops answering at the first epoch logged, past MLflow's retries
    (`monkeypatch.undo()` brings it back)."""
    from mlflow.exceptions import MlflowException

    from harness.tracking.runs import MlflowTracker

    url = "http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch"

    def gone(*args: object, **kwargs: object) -> None:
        # MLflow's own words when its retries run out (rest_utils.http_request)
        raise MlflowException(
            f"API request to {url} failed with exception HTTPConnectionPool(host='127.0.0.1', "
            "port=9): Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch (Caused by "
            "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed to establish "
            'a new connection: [Errno 111] Connection refused"))'
        )

    def server_goes(*args: object, **kwargs: object) -> None:
        for name in ("log_batch", "set_tag", "set_terminated", "log_text", "get_run"):
            monkeypatch.setattr(MlflowClient, name, gone)
        gone()

    monkeypatch.setattr(MlflowTracker, "log_epoch", server_goes)


def test_a_tracking_server_gone_mid_sweep_ends_on_one_clear_message(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found stopping the MLflow server of a shared study mid-trial for longer than MLflow's
    # retries: the trial was failed and its cost counted, then the sweep ended on a traceback
    # hundreds of lines long (closing the study's run met the same dead server).
    _tracking_server_goes(monkeypatch)
    result = run_cli("sweep", str(_experiment(tmp_path, 2)), "--yes")
    assert_clean_error(result, "http://127.0.0.1:9", "Connection refused")
    study = _study()
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 1
    assert ledger_usd(study.get_trials())[0] > 0, "what it trained is counted"


def test_a_trial_cut_short_by_a_tracking_outage_is_closed_with_its_reason_and_rerun(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found resuming after a tracking outage: the next sweep closed the cut trial's MLflow run
    # KILLED "worker died before recording this run" while Optuna held the real reason, and
    # drew new parameters instead of running the trial again (an interrupted one is rerun).
    path = _experiment(tmp_path, 2)
    with pytest.MonkeyPatch.context() as outage:
        _tracking_server_goes(outage)
        assert run_cli("sweep", str(path), "--yes").exit_code == 1
    (cut,) = _study().get_trials(states=(TrialState.FAIL,))
    reason = cut.user_attrs["failure_reason"]
    assert reason.startswith("the MLflow tracking server http://127.0.0.1:9 did not answer")
    (queued,) = _study().get_trials(states=(TrialState.WAITING,))
    assert queued.params == cut.params
    again = run_sweep(load_experiment(str(path)), RecordingView())
    assert again.results[0].spec.learning_rate_multiplier == cut.params["learning_rate_multiplier"]
    run = MlflowClient().get_run(cut.user_attrs["mlflow_run_id"])
    assert (run.info.status, run.data.tags["failure_reason"]) == ("FAILED", reason)


def test_a_tracking_server_gone_at_the_end_still_deletes_hourly_deployments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading `close_sweep` after the outage above: tagging the front met the dead server first,
    # so the study's deployments (Azure, Together: billed by the hour) were left until a next
    # sweep, which "No hosting left billing" says every sweep's end deletes.
    hosting = Capabilities(deploys_models=True, hosting_notes=("by the hour",), synthetic=True)
    memory = _use_backend(monkeypatch, MemoryBackend(capabilities=hosting))
    released: list[str] = []
    monkeypatch.setattr(memory, "release_deployments", lambda name, held: released.append(name))
    _tracking_server_goes(monkeypatch)
    result = run_cli("sweep", str(_experiment(tmp_path, 2)), "--yes")
    assert result.exit_code != 0
    assert released == ["tiny", "tiny"], "checked when the sweep opened, and when it closed"


def _interrupted_sweep(tmp_path: Path) -> optuna.Study:
    """A 2-trial sweep that an interrupt ends: its trial failed and queued again, none RUNNING."""
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_experiment(str(_experiment(tmp_path, 2))), RecordingView())
    study = _study()
    assert not study.get_trials(states=(TrialState.RUNNING,))
    (cut,) = study.get_trials(states=(TrialState.FAIL,))
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.params == cut.params
    return study


def test_a_sweep_over_a_small_budget_says_what_it_would_cost(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found in a real run: "the worst case of 2 more trials plus $0.0000 already committed is
    # $0.0000, over budget_usd $0.0000": every amount below a hundredth of a cent read as zero.
    from harness.errors import BudgetExceeded

    path = _experiment(tmp_path, 2, budget_usd=0.00001)
    with pytest.raises(BudgetExceeded) as refused:
        run_sweep(load_experiment(str(path)), RecordingView(), confirm=None)
    message = str(refused.value)
    assert "$0.0000," not in message and "over budget_usd $0.00001;" in message
    assert "the worst case of 2 more trials plus $0 already committed is $0.0" in message


def test_a_sweep_refused_for_its_budget_records_no_study(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found in a real run: `harness studies` listed "refused  0 done" after a sweep its budget
    # refused, though nothing was run; a second refused study beside one that ran is not kept
    # either, and the study that ran keeps everything it holds.
    from harness.errors import BudgetExceeded

    path = _experiment(tmp_path, 2, budget_usd=0.00001)
    with pytest.raises(BudgetExceeded):
        run_sweep(load_experiment(str(path)), RecordingView(), confirm=None)
    assert not Path("mlruns/optuna.db").exists()
    refused = run_cli("sweep", str(path))
    assert_clean_error(refused, "over budget_usd")
    assert refused.stdout == ""  # it printed a blank line: unstarted progress bars stopping
    path = _experiment(tmp_path, 1)  # the same file, without the budget
    ran = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(ran.results) == 1
    other = load_experiment(str(path), ["study.name=other", "budget_usd=0.00001"])
    asked: list[float] = []

    def refuse(worst: Cost, limit: float) -> bool:
        asked.append(worst.usd)
        return False

    with pytest.raises(BudgetExceeded):
        run_sweep(other, RecordingView(), confirm=refuse)
    assert len(asked) == 1  # asked once, not again once the study is open
    names = optuna.get_all_study_names(storage="sqlite:///mlruns/optuna.db")
    assert names == ["tiny"] and len(_records()) >= 1


class _PessimisticRemote(MemoryBackend):
    """Remote-like: two trials at once, each reserving twice what it turns out to cost (a
    hosted worst case: every token billed, the dearest scoring)."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=Capabilities(synthetic=True, max_concurrency=2, thread_safe=True)
        )

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Estimate:
        exact = super().estimate(spec, data)
        return Estimate(
            Cost(usd=2 * exact.train.usd, trained_tokens=2 * exact.train.trained_tokens),
            Cost(
                usd=2 * exact.evaluation.usd, inference_tokens=2 * exact.evaluation.inference_tokens
            ),
        )


def test_a_trial_still_running_does_not_stop_the_sweep_with_budget_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found against the OpenAI test server (max_concurrency 2, budget $0.012): "t002 skipped:
    # budget: $0.00751 committed of $0.012 ...; this trial could cost up to $0.00592, so no
    # more trials start" while t001 still held its worst case; t001 settled at $0.00319 and the
    # sweep stopped with $0.00478 of $0.012 spent, though the next trial fitted.
    memory = _use_backend(monkeypatch, _PessimisticRemote())
    space = {**SPACE, "n_epochs": 1}  # every trial costs the same: no checkpoints
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    study = {"n_trials": 8, "sampler": {"kind": "random"}}
    path = write_experiment(tmp_path, data, space, study=study)
    experiment = load_experiment(str(path))
    prepared_data, _ = prepare_experiment(experiment)
    spec = TrialSpec(0, 1, 1.0, 8, experiment.config.backend.model)
    reserved = memory.estimate(spec, prepared_data).total.usd  # twice a trial's actual cost
    budget = 2.25 * reserved  # room for the reservation of a third trial after two settle
    experiment = load_experiment(str(path), [f"budget_usd={budget}"])
    outcome = run_sweep(experiment, RecordingView(), confirm=lambda *_: True)
    spent = sum(r.spent for r in _records())
    assert outcome.stopped is not None and spent <= budget
    # Stopped only when what was left could not cover another trial's reservation.
    assert budget - spent < reserved, (len(outcome.results), spent, budget, outcome.stopped)
    assert len(outcome.results) == 3


def test_a_draw_the_budget_cannot_cover_runs_cut_to_what_is_left(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found against the OpenAI test server: with nothing in flight, one dear draw ended the
    # sweep ($0.00562 left, "so no more trials start") though a 1-epoch trial ($0.00296) fitted.
    # Now the drawn configuration runs with fewer epochs, the most that fit.
    path = _experiment(tmp_path, 3)
    experiment = load_experiment(str(path))
    data, _ = prepare_experiment(experiment)
    model = experiment.config.backend.model
    cost = {n: backend.estimate(TrialSpec(0, n, 1.0, 8, model), data).total.usd for n in (1, 2, 3)}
    budget = cost[3] + (cost[1] + cost[2]) / 2  # after a 3-epoch trial: 1 epoch fits, 2 do not
    storage = "sqlite:///mlruns/optuna.db"
    Path("mlruns").mkdir()
    study = optuna.create_study(
        study_name="tiny", storage=storage, directions=["maximize", "minimize"]
    )
    for _ in range(2):
        study.enqueue_trial({"n_epochs": 3, "learning_rate_multiplier": 1.5})
    experiment = load_experiment(str(path), [f"budget_usd={budget}", "study.early_stopping=false"])
    outcome = run_sweep(experiment, RecordingView(), confirm=lambda *_: True)
    ran = [(r.spec.n_epochs, r.spec.learning_rate_multiplier) for r in outcome.results]
    assert ran == [(3, 1.5), (1, 1.5)]
    (skipped,) = _study().get_trials(states=(TrialState.PRUNED,))
    assert skipped.params["n_epochs"] == 3
    assert "runs instead with n_epochs=1" in skipped.user_attrs["skipped_reason"]
    assert outcome.stopped is not None and "no more trials start" in outcome.stopped
    assert sum(ledger_usd(_study().get_trials())) <= budget


def test_another_workers_trial_in_flight_does_not_stop_the_sweep_with_budget_left(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found against the OpenAI test server: the wait for trials in flight covered this worker's
    # own only, so a worker stopped on another's held worst case, which then settled lower.
    import socket
    import subprocess
    import sys
    import threading

    space = {**SPACE, "n_epochs": 1}  # every trial costs the same
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    path = write_experiment(tmp_path, data, space, study={"n_trials": 3})
    experiment = load_experiment(str(path))
    prepared, _ = prepare_experiment(experiment)
    model = experiment.config.backend.model
    each = backend.estimate(TrialSpec(0, 1, 1.0, 8, model), prepared).total.usd
    Path("mlruns").mkdir()
    storage = "sqlite:///mlruns/optuna.db"
    study = optuna.create_study(
        study_name="tiny", storage=storage, directions=["maximize", "minimize"]
    )
    lr = optuna.distributions.FloatDistribution(0.5, 4.0, log=True)
    other = study.ask({"learning_rate_multiplier": lr})
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    for key, value in {"host": socket.gethostname(), "pid": alive.pid}.items():
        other.set_user_attr(key, value)
    other.set_user_attr("reserved_usd", 2 * each)  # its worst case, held while it runs

    def other_settles() -> None:  # the other worker's trial ends, costing a quarter of that
        deadline = time.monotonic() + 60
        while not study.get_trials(states=(TrialState.COMPLETE,)) and time.monotonic() < deadline:
            time.sleep(0.1)  # until our first trial is done and the next one would not fit
        time.sleep(3)
        other.set_user_attr("cost_usd", each / 2)
        study.tell(other, [0.6, each / 2])

    budget = 3.5 * each  # with the other's worst case held, one trial of ours fits
    experiment = load_experiment(str(path), [f"budget_usd={budget}"])
    settles = threading.Thread(target=other_settles)
    settles.start()
    try:
        outcome = run_sweep(experiment, RecordingView(), confirm=lambda *_: True)
    finally:
        settles.join()
        alive.kill()
        alive.wait()
    assert len(outcome.results) >= 2, outcome.stopped
    assert sum(ledger_usd(_study().get_trials())) <= budget


class _TestServerBackend(MemoryBackend):
    """A backend at a test server on this machine: it notes `synthetic` in every trial's journal,
    as the OpenAI and Together backends do at a loopback `base_url`."""

    def fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: Any,
        journal: Any = None,
    ) -> Any:
        if journal is not None:
            journal.record("synthetic", "true")
        return super().fine_tune(spec, data, on_epoch, journal)


def test_a_test_servers_figures_are_labelled_synthetic_wherever_they_are_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found against the OpenAI test server: the sweep said "(synthetic: ...)" once as it
    # started, but `harness report` answered "trial 0 ... 87.5% test accuracy ... for $0.00159"
    # with no word of it (report.md and report.html neither), and `harness trials` and
    # `harness studies` showed the figures as results.
    _use_backend(monkeypatch, _TestServerBackend())
    run_sweep(load_experiment(str(_experiment(tmp_path, 2))), RecordingView())
    for command in (("trials", "tiny"), ("studies",)):
        result = run_cli(*command)
        assert result.exit_code == 0, result.output
        assert "synthetic" in result.output, command
    assert json.loads(run_cli("studies", "--json").output)[0]["synthetic"] is True
    result = run_cli("report", "tiny", "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert result.output.lstrip().startswith("Synthetic:"), result.output[:300]
    for name in ("report.md", "report.html"):
        assert "test server" in (tmp_path / "report" / name).read_text(), name


def test_a_real_backends_figures_are_not_labelled_synthetic(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    run_sweep(load_experiment(str(_experiment(tmp_path, 1))), RecordingView())
    assert "synthetic" not in run_cli("trials", "tiny").output
    assert "synthetic" not in run_cli("studies").output
    assert not json.loads(run_cli("studies", "--json").output)[0]["synthetic"]
    assert not run_cli("report", "tiny").output.lstrip().startswith("Synthetic:")


def test_the_question_before_an_over_budget_sweep_shows_small_amounts(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The error without a terminal was fixed to print amounts as `usd()` does; the question
    # asked at a terminal still read "Worst case $0.0000 exceeds the budget $0.0000".
    import types

    import typer

    from harness.cli import run as run_command

    asked: list[str] = []
    terminal = types.SimpleNamespace(stdin=types.SimpleNamespace(isatty=lambda: True))
    monkeypatch.setattr(run_command, "sys", terminal)
    monkeypatch.setattr(typer, "confirm", lambda text: asked.append(text) or False)
    path = _experiment(tmp_path, 2, budget_usd=0.00001)
    result = run_cli("sweep", str(path))
    assert result.exit_code != 0
    (question,) = asked
    assert "the budget $0.00001;" in question, question


def test_a_hosted_trial_that_failed_before_creating_its_job_is_settled_at_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found on the Azure test server: a sweep killed while trial 0 uploaded its files (no job
    # key journalled, so no job could exist) kept its $0.00311 reservation as spent: `harness
    # studies` said $0.0081 where the provider billed $0.0050, and the budget lost the difference.
    hosted = MemoryBackend(capabilities=Capabilities(synthetic=True, bills_jobs=True))
    hosted.fail = frozenset({1})  # fails before any job is created: no job key in its journal
    monkeypatch.setattr(session, "load_backend", lambda config, progress=None: hosted)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")
    outcome = run_sweep(load_experiment(str(_experiment(tmp_path, 2))), RecordingView())
    assert len(outcome.failures) == 1 and len(outcome.results) == 2
    shown = json.loads(run_cli("trials", "tiny", "--json").output)
    (cut,) = [row for row in shown if row["state"] == "fail"]
    assert cut["cost"]["ledger_usd"] == 0
    done = sum(row["cost"]["ledger_usd"] for row in shown if row["state"] == "complete")
    studies = json.loads(run_cli("studies", "--json").output)
    assert studies[0]["spent_usd"] == pytest.approx(done, rel=1e-9)


def test_train_examples_fewer_than_the_classes_is_refused_before_a_study_exists(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by QA: `train_examples: 2` on 5-star data passed `harness estimate`, then `harness
    # sweep` asked a trial and died with "cannot draw 2 examples stratified over 5 classes",
    # naming no file or field and leaving the trial RUNNING in a study that held nothing else.
    monkeypatch.setattr("harness.sweep.estimate.load_backend", lambda config: backend)
    space = {**SPACE, "train_examples": {"type": "categorical", "choices": [1, 40]}}
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    path = write_experiment(tmp_path, data, space, study={"n_trials": 1})
    for command in ("estimate", "sweep"):
        result = run_cli(command, str(path))
        assert_clean_error(result, "space.yaml", "train_examples", "1", "2 classes")
    assert not Path("mlruns/optuna.db").exists()


def test_a_study_is_not_resumed_on_other_data(tmp_path: Path, backend: MemoryBackend) -> None:
    # Found by QA: relabelling rows of the CSV and running `harness sweep EXP --add 1` resumed
    # the study silently; the new trial, scored on another validation set, was stopped early
    # against the old trials' front and put beside them in one table and one Pareto front.
    path = _experiment(tmp_path, 1)
    run_sweep(load_experiment(str(path)), RecordingView())
    before = len(_study().trials)
    write_csv(tmp_path / "reviews.csv", review_rows(100, seed=5))  # other rows, same file
    refused = run_cli("sweep", str(path), "--add", "1")
    assert_clean_error(refused, "study 'tiny'", "other data", "study.name")
    assert len(_study().trials) == before
    write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))  # the data it was run on
    assert run_cli("sweep", str(path), "--add", "1").exit_code == 0
    assert len([r for r in _records() if not r.is_checkpoint]) == 2


def test_a_trial_whose_pricing_fails_is_failed_not_left_running(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by QA: an error while pricing an asked trial (there: "cannot draw 2 examples
    # stratified over 5 classes") ended the sweep with the trial RUNNING in the study, listed as
    # `running` by `harness trials` and `harness studies` until a later sweep's heartbeat check.
    from harness.errors import BackendError

    priced = backend.estimate

    def estimate(spec: TrialSpec, data: PreparedData) -> Estimate:
        if spec.bound is None:  # a drawn trial, not the corners the worst case is priced at
            raise BackendError("no price for this model")
        return priced(spec, data)

    monkeypatch.setattr(backend, "estimate", estimate)
    result = run_cli("sweep", str(_experiment(tmp_path, 1)))
    assert_clean_error(result, "no price for this model")
    trials = _study().trials
    assert trials and TrialState.RUNNING not in {t.state for t in trials}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and "no price for this model" in str(failed[0].user_attrs)


def test_the_last_status_line_counts_another_workers_trial_that_ended_meanwhile(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found with two workers on one study: the one whose last trial ended first waited for the
    # other's, then left printing "3/4 trials" above a table of 4 completed trials (its status
    # line was last sent when its own trial ended).
    import socket
    import subprocess
    import sys
    import threading

    path = _experiment(tmp_path, 2)
    Path("mlruns").mkdir()
    study = optuna.create_study(
        study_name="tiny", storage="sqlite:///mlruns/optuna.db", directions=["maximize", "minimize"]
    )
    lr = optuna.distributions.FloatDistribution(0.5, 4.0, log=True)
    other = study.ask({"learning_rate_multiplier": lr})
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    for key, value in {"host": socket.gethostname(), "pid": alive.pid}.items():
        other.set_user_attr(key, value)

    def other_ends() -> None:  # after this worker's own trial
        deadline = time.monotonic() + 60
        while not study.get_trials(states=(TrialState.COMPLETE,)) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        other.set_user_attr("cost_usd", 0.0001)
        study.tell(other, [0.6, 0.0001])

    view = _Statuses()
    ends = threading.Thread(target=other_ends)
    ends.start()
    try:
        run_sweep(load_experiment(str(path)), view)
    finally:
        ends.join()
        alive.kill()
        alive.wait()
    assert len(_records()) >= 2 and not view.statuses[-1].running
    assert view.statuses[-1].done == len([r for r in _records() if not r.is_checkpoint]) == 2


def test_every_trial_in_flight_when_the_tracking_server_goes_is_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading the outage above with jobs run side by side: the trial whose epoch met the dead
    # server was failed and queued again, but the one running beside it was left RUNNING in
    # the study, its worker gone, until another worker's heartbeat grace took it for dead.
    from harness.tracking.runs import MlflowTracker

    side_by_side = Capabilities(synthetic=True, max_concurrency=2, thread_safe=True)
    _use_backend(monkeypatch, MemoryBackend(capabilities=side_by_side))
    start, started = MlflowTracker.start_trial, []

    def counted(self: MlflowTracker, *args: Any, **kwargs: Any) -> str | None:
        started.append(True)
        return start(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as outage:
        log_epoch = MlflowTracker.log_epoch
        _tracking_server_goes(outage)
        going = MlflowTracker.log_epoch

        def once_a_pair_runs(self: MlflowTracker, *args: Any, **kwargs: Any) -> None:
            if len(started) > 1:  # the first trial was recorded alone
                time.sleep(0.3)  # the pair's second trial starts meanwhile
            (going if len(started) == 3 else log_epoch)(self, *args, **kwargs)

        outage.setattr(MlflowTracker, "log_epoch", once_a_pair_runs)
        outage.setattr(MlflowTracker, "start_trial", counted)
        data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
        study = {"n_trials": 3, "sampler": {"kind": "random"}}
        one_epoch = write_experiment(tmp_path, data, {**SPACE, "n_epochs": 1}, study=study)
        result = run_cli("sweep", str(one_epoch), "--yes")  # no checkpoints: a trial, a run
        assert result.exit_code == 1, result.output
        # The trial beside the cut one runs on in its daemon thread (a real worker exits, which
        # ends it): let it end while the outage is patched in, or its late call to the dead
        # server patches MLflow's client for every later test in this process.
        for thread in threading.enumerate():
            if thread.name == "trial":
                thread.join(timeout=60)
    study = _study()
    assert not study.get_trials(states=(TrialState.RUNNING,))
    cut = study.get_trials(states=(TrialState.FAIL,))
    assert len(cut) == 2, result.output
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2
    assert all("did not answer" in t.user_attrs["failure_reason"] for t in cut)


def test_a_trial_whose_run_cannot_open_for_an_outage_is_queued_again_at_no_cost(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tracking server gone between two trials is met first by the next trial's opening of its
    # run: that trial, trained on nothing, was left RUNNING for the next start to fail as "its
    # worker stopped while it ran", its worst case counted as spent for good.
    from harness.tracking.runs import MlflowTracker

    start, opened = MlflowTracker.start_trial, []

    def second_meets_the_outage(self: MlflowTracker, *args: Any, **kwargs: Any) -> Any:
        opened.append(True)
        if len(opened) == 2:
            _tracking_server_goes(monkeypatch)
            MlflowTracker.log_epoch(self, "run", None)  # type: ignore[arg-type]  # raises
        return start(self, *args, **kwargs)

    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    study = {"n_trials": 2, "sampler": {"kind": "random"}}
    one_epoch = write_experiment(tmp_path, data, {**SPACE, "n_epochs": 1}, study=study)
    monkeypatch.setattr(MlflowTracker, "start_trial", second_meets_the_outage)
    result = run_cli("sweep", str(one_epoch), "--yes")
    assert result.exit_code == 1, result.output
    study_now = _study()
    assert not study_now.get_trials(states=(TrialState.RUNNING,))
    (cut,) = study_now.get_trials(states=(TrialState.FAIL,))
    assert "did not answer" in cut.user_attrs["failure_reason"]
    (queued,) = study_now.get_trials(states=(TrialState.WAITING,))
    assert queued.params == cut.params
    assert ledger_usd([cut]) == (0.0, 0.0), "it trained nothing"
    assert backend.trained == [0]


def test_a_grid_smaller_than_n_trials_runs_once_each_then_stops(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found walking a grid search: once every point had run, Optuna's grid sampler called
    # `study.stop()` from `tell`, which raises outside Optuna's own loop: a traceback (a
    # RuntimeError) after the last point, its checkpoints left for the next start.
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    space = {
        **SPACE,
        "n_epochs": 2,
        "learning_rate_multiplier": {"type": "float", "low": 1.0, "high": 2.0, "step": 1.0},
    }
    study = {"n_trials": 3, "sampler": {"kind": "grid"}}
    path = write_experiment(tmp_path, data, space, study=study)
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 2 and not outcome.failures
    assert outcome.stopped is not None and "2 configurations" in outcome.stopped
    trials = _study().get_trials(states=(TrialState.COMPLETE,))
    trained = [t for t in trials if not TrialRecord.from_attrs(t.user_attrs).is_checkpoint]
    assert sorted(t.params["learning_rate_multiplier"] for t in trained) == [1.0, 2.0]
    assert len([r for r in _records() if r.is_checkpoint]) == 2  # recorded, not left owed
    # Run again: nothing new to train, said the same way, nothing asked for.
    again = run_sweep(load_experiment(str(path)), RecordingView())
    assert not again.results and again.stopped == outcome.stopped
    assert len(_study().get_trials()) == 4


def test_a_grid_point_killed_and_run_again_leaves_no_other_point_out(
    tmp_path: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found killing a grid search: the killed trial's retry (queued again with its params) was
    # given the grid point of its new trial number, so that point counted as run, and never ran.
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    choices = [1.0, 2.0, 3.0]
    space = {
        **SPACE,
        "n_epochs": 1,
        "learning_rate_multiplier": {"type": "categorical", "choices": choices},
    }
    path = write_experiment(
        tmp_path, data, space, study={"n_trials": 3, "sampler": {"kind": "grid"}}
    )
    train = backend.fine_tune

    def killed_once(spec: TrialSpec, *args: object, **kwargs: object) -> object:
        monkeypatch.setattr(backend, "fine_tune", train)
        raise KeyboardInterrupt  # what Ctrl-C, SIGTERM and SIGHUP raise in a sweep

    monkeypatch.setattr(backend, "fine_tune", killed_once)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_experiment(str(path)), RecordingView())
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 3 and outcome.stopped is None
    trained = sorted(r.spec.learning_rate_multiplier for r in outcome.results)
    assert trained == choices


def test_a_grid_cut_by_its_budget_and_resumed_runs_every_point_once(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found resuming a grid search stopped by its budget: the resumed process shuffled the grid
    # with another seed (the sampler is seeded past the trials held), so the points recorded
    # as run were other points; and a budget cut ran a point the grid ran again later. One
    # point ran three times, another never.
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    space = {
        **SPACE,
        "n_epochs": {"type": "categorical", "choices": [1, 3]},
        "learning_rate_multiplier": {"type": "categorical", "choices": [1.0, 2.0, 3.0]},
    }
    study = {"n_trials": 6, "sampler": {"kind": "grid"}}
    path = write_experiment(tmp_path, data, space, study=study, budget_usd=0.006)
    first = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda *_: True)
    assert first.stopped is not None and "budget" in first.stopped
    again = run_sweep(load_experiment(str(path), ["budget_usd=0.1"]), RecordingView())
    assert again.stopped is None
    done = [
        (t.params["n_epochs"], t.params["learning_rate_multiplier"])
        for t in _study().get_trials(states=(TrialState.COMPLETE,))
        if not TrialRecord.from_attrs(t.user_attrs).is_checkpoint
    ]
    assert sorted(done) == [(n, lr) for n in (1, 3) for lr in (1.0, 2.0, 3.0)]


def test_a_grid_is_priced_for_its_points_not_for_more_trials_than_it_holds(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    # Found walking a grid search: with n_trials above the grid's size, the worst case counted
    # n_trials trials, so a budget that covers the whole grid was refused without a terminal
    # ("the worst case of 8 more trials ... over budget_usd"), for trials that can never run.
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))
    space = {
        **SPACE,
        "n_epochs": 1,
        "learning_rate_multiplier": {"type": "categorical", "choices": [1.0, 2.0]},
    }
    study = {"n_trials": 8, "sampler": {"kind": "grid"}}
    path = write_experiment(tmp_path, data, space, study=study, budget_usd=0.003)  # 2 x $0.00132
    outcome = run_sweep(load_experiment(str(path)), RecordingView())  # no one to ask
    assert len(outcome.results) == 2 and "grid" in (outcome.stopped or "")

"""Whole sweeps on the OpenAI backend against the fake server: tracking, budget, refusal, and a
killed sweep that resumes without creating a single duplicate job.

Every number the fake produces is synthetic; these tests check plumbing, not model quality.
"""

# The fixture is imported by name, so every test that takes it "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness.backends.base import NullProgress
from harness.cli.trial_rows import trial_records
from harness.config import load_experiment
from harness.errors import BudgetExceeded
from harness.records import Cost, TrialResult, TrialSpec
from harness.sweep.budget import ledger_usd
from harness.sweep.loop import run_sweep
from harness.tracking.journal import ran_on_a_test_server
from tests.cli_runner import run_cli
from tests.conftest import openai_experiment
from tests.openai_fake import FakeOpenAI, openai_fake  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
KEY = "sk-harness-sweep-test-0123456789"
JOBS = "/fine_tuning/jobs"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


class RecordingView:
    """A SweepView that remembers what it was told."""

    def __init__(self) -> None:
        self.progress = NullProgress()
        self.live = None  # no live events (`SweepView.live`)
        self.finished: list[TrialResult] = []
        self.failed: list[tuple[TrialSpec, str]] = []

    def sweep_started(self, study_name: str, done: int, target: int) -> None:
        pass

    def trial_started(self, spec: TrialSpec, estimate: Cost) -> None:
        pass

    def trial_finished(self, result: TrialResult) -> None:
        self.finished.append(result)

    def trial_failed(self, spec: TrialSpec, reason: str) -> None:
        self.failed.append((spec, reason))

    def message(self, text: str) -> None:
        pass


def _experiment(tmp_path: Path, n_trials: int = 3, **extra: Any) -> Path:
    return openai_experiment(tmp_path, "oa-sweep", n_trials, **extra)


def _children(tmp_path: Path) -> list[Any]:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("oa-sweep")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    return [run for run in runs if "mlflow.parentRunId" in run.data.tags]


def _jobs_created(server: FakeOpenAI) -> int:
    return server.state.count("POST", JOBS, status=200)


@pytest.fixture
def fake_env(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> FakeOpenAI:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.base_url)
    openai_fake.state.job_duration = 0.3
    # Absolute: MLflow caches stores by URI, so a relative sqlite URI would reach an earlier
    # test's directory.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    return openai_fake


def test_sweep_tracks_costs_tokens_epochs_and_ids(tmp_path: Path, fake_env: FakeOpenAI) -> None:
    path = _experiment(tmp_path, n_trials=2)
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 2 and outcome.stopped is None
    assert _jobs_created(fake_env) == 2
    assert fake_env.state.count("POST", "/files", status=200) == 2  # shared by every trial
    children = _children(tmp_path)
    assert len(children) == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for run in children:
        metrics, tags = run.data.metrics, run.data.tags
        for name in ("train_cost_usd", "eval_cost_usd", "cost_usd", "trained_tokens"):
            assert metrics[name] > 0, name
        assert tags["job_id"].startswith("ftjob-")
        assert tags["fine_tuned_model"].startswith("ft:gpt-4.1-nano-2025-04-14:harness-test:")
        assert tags["synthetic"] == "true"
        epochs = int(run.data.params["n_epochs"])
        history = client.get_metric_history(run.info.run_id, "valid_accuracy")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        checkpoints = client.get_metric_history(run.info.run_id, "checkpoint_test_accuracy")
        assert len(checkpoints) == epochs - 1  # the last epoch is the final model's test score
    # The study run says which dated price row priced the sweep.
    experiment = client.get_experiment_by_name("oa-sweep")
    assert experiment is not None
    parents = [r for r in client.search_runs([experiment.experiment_id]) if r not in children]
    used = {run.data.tags.get("harness.prices") for run in parents} - {None}
    assert any(
        "openai gpt-4.1-nano-2025-04-14:" in str(u) and "as of 2025-07-01" in str(u) for u in used
    )
    # `harness trials --json` / `--csv` label every record: a script reading them could not
    # tell a test server's figures from a provider's (the table says it in its title).
    records = trial_records(outcome.handle.study, {})
    assert len(records) == 2 and all(record["synthetic"] is True for record in records)
    # The key reached the server in a header and nothing else: not MLflow, not the study.
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), file


def test_sweep_logs_step_metrics_and_the_result_file(tmp_path: Path, fake_env: FakeOpenAI) -> None:
    """Needs the sweep's journal to offer `log_metrics(metrics, step)` and `log_text`."""
    run_sweep(load_experiment(str(_experiment(tmp_path, n_trials=1))), RecordingView())
    (run,) = _children(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert client.get_metric_history(run.info.run_id, "step_train_loss")
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "openai")]
    assert "openai/result_file.csv" in artifacts


def test_budget_stops_the_sweep_before_overspending(tmp_path: Path, fake_env: FakeOpenAI) -> None:
    from harness.backends import load_backend
    from harness.data.prepare import prepare_experiment
    from harness.sweep.estimate import corner_specs
    from harness.sweep.search_space import load_search_space

    experiment = load_experiment(str(_experiment(tmp_path, n_trials=4)))
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    backend = load_backend(experiment.config.backend)
    data, _ = prepare_experiment(experiment)
    worst = max(backend.estimate(s, data).total.usd for s in corner_specs(experiment, space))
    budget = 1.5 * worst  # room for one trial's worst case, never two at once
    path = _experiment(tmp_path, n_trials=4, budget_usd=budget)
    # Without confirmation, a sweep whose worst case exceeds the budget does not start at all.
    with pytest.raises(BudgetExceeded, match="over budget_usd"):
        run_sweep(load_experiment(str(path)), RecordingView())
    assert _jobs_created(fake_env) == 0
    # With it (--yes), trials run while their reservations fit (a draw that does not fit runs
    # cut to fewer epochs or examples), and stop when none does.
    outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda w, b: True)
    if outcome.stopped is None:
        assert len(outcome.results) == 4
    else:
        assert outcome.stopped.startswith("budget")
    spent = sum(r.total_cost.usd for r in outcome.results)
    assert spent <= budget
    assert 1 <= _jobs_created(fake_env) == len(outcome.results) <= 4


def test_training_refused_stops_the_sweep_with_one_clear_reason(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    fake_env.state.refuse_training = True
    view = RecordingView()
    outcome = run_sweep(load_experiment(str(_experiment(tmp_path, n_trials=4))), view)
    assert outcome.stopped is not None and "2027-01-06" in outcome.stopped
    assert not outcome.results and _jobs_created(fake_env) == 0
    # One trial at a time until a first job is accepted: the refusal is met once.
    assert fake_env.state.count("POST", JOBS, status=403) == 1
    assert len(view.failed) == 0  # not announced per trial: the sweep says it once
    children = _children(tmp_path)
    assert children and all(
        "training_not_available" in run.data.tags["failure_reason"] for run in children
    )
    assert all(run.info.status == "FAILED" for run in children)


def test_a_refused_job_costs_nothing_in_the_ledger(tmp_path: Path, fake_env: FakeOpenAI) -> None:
    # The 403 is an answer: no job was made, so nothing was spent. The trial stayed committed
    # at its reservation (`harness studies` said $0.20 spent on a refused sweep), as a create
    # whose reply was lost does, since its create request had been sent.
    from harness.sweep.budget import committed_usd

    fake_env.state.refuse_training = True
    run_sweep(load_experiment(str(_experiment(tmp_path, n_trials=2))), RecordingView())
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    trials = optuna.load_study(study_name="oa-sweep", storage=storage).get_trials()
    assert trials and all(t.state == TrialState.FAIL for t in trials)
    assert all(float(t.user_attrs.get("reserved_usd") or 0) > 0 for t in trials)
    assert committed_usd(trials) == 0.0


def test_a_refusal_after_a_lost_create_reply_keeps_the_reservation() -> None:
    # A first attempt whose reply was lost may have made a job the listing does not show yet:
    # a refusal of the next attempt says nothing about it, so the trial stays committed.
    from harness.backends.base import CREATE_SENT, MemoryJournal
    from harness.backends.hosted._job_keys import Retry, create_once

    class Lost(Exception):
        pass

    class Refused(Exception):
        pass

    answers: list[Exception] = [Lost(), Refused()]

    def create() -> str:
        raise answers.pop(0)

    def attempt(refused: tuple[type[Exception], ...]) -> str | None:
        journal = MemoryJournal()
        with pytest.raises(Refused):
            retry = Retry(3, 0, 0)
            create_once(create, lambda: None, journal, (Lost,), retry, lambda s: None, refused)
        return journal.recall(CREATE_SENT)

    assert attempt((Refused,)) == "true"
    answers[:] = [Refused()]
    assert attempt((Refused,)) == ""  # refused at once: known to have made nothing
    answers[:] = [Refused()]
    assert attempt(()) == "true"  # an error not known to be an answer: the reply may be lost
    for status in (408, 409):  # a timeout or a conflict may come after the server acted
        conflict = Refused()
        conflict.status_code = status  # type: ignore[attr-defined]
        answers[:] = [conflict]
        assert attempt((Refused,)) == "true", status


def test_the_cli_says_a_refusal_once_and_exits_non_zero(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    fake_env.state.refuse_training = True
    result = run_cli("sweep", str(_experiment(tmp_path, n_trials=4)))
    assert result.exit_code == 3
    assert (result.stdout + result.stderr).count("2027-01-06") == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_a_sweep_whose_every_trial_failed_exits_non_zero(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    for _ in range(8):
        fake_env.state.fail_next_job("invalid_training_file", "The training file is invalid.")
    result = run_cli("sweep", str(_experiment(tmp_path, n_trials=2)))
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "every trial failed" in result.stderr and "invalid" in result.stderr


def test_jobs_that_failed_validation_are_settled_at_what_they_trained(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    # A job the provider failed while validating its file trained nothing (its job object has
    # no trained_tokens): it was billed nothing, so the ledger settles it at $0, not at the
    # worst case it reserved; `harness studies` says $0 spent.
    for _ in range(8):
        fake_env.state.fail_next_job("invalid_training_file", "The training file is invalid.")
    path = str(_experiment(tmp_path, n_trials=2))
    result = run_cli("sweep", path)
    assert result.exit_code == 1, result.stdout + result.stderr
    study = optuna.load_study(
        study_name="oa-sweep", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed and all(t.user_attrs["journal.job_id"] for t in failed)
    assert all(t.user_attrs["reserved_usd"] > 0 for t in failed)
    assert ledger_usd(study.get_trials()) == (0.0, 0.0)
    assert all(t.user_attrs["settled_usd"] == 0.0 for t in failed)
    listed = run_cli("studies", "--experiment", path, "--json")
    assert '"spent_usd": 0.0' in listed.stdout, listed.stdout


def test_optuna_draws_the_pareto_front_of_a_harness_study(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    path = _experiment(tmp_path, n_trials=3)
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    study = optuna.load_study(
        study_name="oa-sweep", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    assert len(outcome.results) == 3
    figure = optuna.visualization.plot_pareto_front(
        study, target_names=["validation accuracy", "cost (USD)"]
    )
    points = sum(len(trace.x) for trace in figure.data if trace.x is not None)
    assert points == len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert figure.layout.xaxis.title.text == "validation accuracy"


def _sweep_process(path: Path, server: FakeOpenAI, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "harness", "sweep", str(path)]
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_killed_sweep_resumes_without_a_duplicate_job(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.state.job_duration = 3.0  # long enough to kill the sweep while it waits
    path = _experiment(tmp_path, n_trials=2)
    first = _sweep_process(path, openai_fake, tmp_path)
    deadline = time.monotonic() + 60
    while _jobs_created(openai_fake) == 0 and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[0].decode()[-2000:]
        time.sleep(0.05)
    assert _jobs_created(openai_fake) >= 1
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    before = set(openai_fake.state.jobs)

    openai_fake.state.job_duration = 0.5
    second = _sweep_process(path, openai_fake, tmp_path)
    output = second.communicate(timeout=120)[0].decode()
    assert second.returncode == 0, output[-3000:]

    assert _jobs_created(openai_fake) == 2, output[-3000:]
    study = optuna.load_study(
        study_name="oa-sweep", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    assert before <= {t.user_attrs["journal.job_id"] for t in done}


def test_sigterm_stops_a_hosted_sweep_at_once_and_its_job_is_resumed_not_paid_twice(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.state.job_duration = 120.0  # the sweep must not wait for it to end
    path = _experiment(tmp_path, n_trials=1)
    first = _sweep_process(path, openai_fake, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while _jobs_created(openai_fake) == 0 and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()[0].decode()[-2000:]
            time.sleep(0.05)
        time.sleep(0.5)  # the job id is journalled and the trial waits on the job
        first.send_signal(signal.SIGTERM)
        output = first.communicate(timeout=60)[0].decode()
    finally:
        if first.poll() is None:  # it did not stop: leave nothing running
            first.kill()
            first.wait()
    assert first.returncode == 143, output[-3000:]
    assert "interrupted (SIGTERM)" in output and "Traceback" not in output, output[-3000:]

    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    study = optuna.load_study(study_name="oa-sweep", storage=storage)
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["FAIL", "WAITING"]  # settled, and queued again to resume its paid job
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("oa-sweep").experiment_id])
    assert runs and {r.info.status for r in runs} <= {"KILLED", "FINISHED"}

    openai_fake.state.advance(120.0)  # the paid job has finished meanwhile
    second = _sweep_process(path, openai_fake, tmp_path)
    rest = second.communicate(timeout=120)[0].decode()
    assert second.returncode == 0, rest[-3000:]
    assert _jobs_created(openai_fake) == 1, rest[-3000:]  # the same job, not a second one


@pytest.mark.parametrize(
    ("problem", "needle", "code"),
    [
        ("no key", "OPENAI_API_KEY is not set", 2),
        ("wrong key", "rejected OPENAI_API_KEY", 2),
        ("unreachable", "cannot reach", 1),
        ("long example", "max_tokens_per_example", 2),
        ("unpriced model", "no price", 2),
    ],
)
def test_free_checks_fail_before_anything_is_recorded(
    tmp_path: Path,
    fake_env: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
    needle: str,
    code: int,
) -> None:
    backend: dict[str, Any] = {}
    if problem == "no key":
        monkeypatch.delenv("OPENAI_API_KEY")
    elif problem == "wrong key":
        monkeypatch.setenv("OPENAI_API_KEY", "sk-not-the-right-one-0123456789")
        fake_env.state.fail_next("/fine_tuning/jobs", 401, code="invalid_api_key", count=10)
    elif problem == "unreachable":
        monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # discard port: refused
    elif problem == "long example":
        backend = {"max_tokens_per_example": 8}
    else:
        backend = {"model": "babbage-003"}
    path = _experiment(tmp_path, n_trials=2)
    if backend:
        config = yaml.safe_load(path.read_text())
        config["backend"].update(backend)
        path.write_text(yaml.safe_dump(config))
    result = run_cli("sweep", str(path))
    assert result.exit_code == code, result.stdout + result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert fake_env.state.count("POST", "/files") == 0 and fake_env.state.count("POST", JOBS) == 0
    assert not (tmp_path / "mlruns" / "optuna.db").exists()
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def _checkpoint_trials(tmp_path: Path, name: str = "oa-sweep") -> dict[int, list[int]]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    found: dict[int, list[int]] = {}
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        if "checkpoint_of" in trial.user_attrs:
            parent = trial.user_attrs["checkpoint_of"]
            found.setdefault(parent, []).append(trial.user_attrs["epochs_run"])
    return {parent: sorted(epochs) for parent, epochs in found.items()}


def _one_trial_of(tmp_path: Path, n_epochs: int) -> Path:
    """An experiment of one trial of `n_epochs`, its learning rate and batch size fixed."""
    path = _experiment(tmp_path, n_trials=1)
    space = f"n_epochs: {n_epochs}\nlearning_rate_multiplier: 1.0\nbatch_size: 8\n"
    (tmp_path / "space.yaml").write_text(space)
    return path


def test_a_ten_epoch_job_records_its_last_checkpoints_by_epoch(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    path = _one_trial_of(tmp_path, n_epochs=10)
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    (result,) = outcome.results
    assert [e.epoch for e in result.model.epochs] == [8, 9, 10]
    assert _checkpoint_trials(tmp_path) == {0: [8, 9]}


def test_epoch_checkpoints_of_a_test_servers_job_are_labelled_synthetic(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    # Found with three workers on the fake server: trial runs were tagged synthetic=true, their
    # checkpoints' runs and trials not, so promoting a checkpoint (the report's pick may be one)
    # registered a test server's model as `synthetic=false`.
    path = _one_trial_of(tmp_path, n_epochs=3)
    run_sweep(load_experiment(str(path)), RecordingView())
    assert _checkpoint_trials(tmp_path) == {0: [1, 2]}
    study = optuna.load_study(
        study_name="oa-sweep", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert [ran_on_a_test_server([t]) for t in trials] == [True] * 3
    assert [run.data.tags.get("synthetic") for run in _children(tmp_path)] == ["true"] * 3


def test_a_jobs_checkpoint_line_says_its_scoring_was_paid_with_the_trial(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    # Found on the fake: "t002 = its epoch 1: test acc 0.5783  cost $0.031 (scoring it: $0)",
    # while the job paid for scoring that checkpoint on the test set (in the trial's own cost,
    # and in the checkpoint's $0.031): a newcomer read that scoring a hosted model is free.
    path = _one_trial_of(tmp_path, n_epochs=2)
    view = _Listening()
    run_sweep(load_experiment(str(path)), view)
    (line,) = [x for x in view.messages if "= its epoch 1:" in x]
    assert "scoring it: $0)" not in line
    assert line.endswith("(scored on the test set with its trial, paid in the trial's cost)")


class _KilledAfterTheTrial(RecordingView):
    """Dies in the instant after a trial completes and before its checkpoints are recorded."""

    def trial_finished(self, result: TrialResult) -> None:
        super().trial_finished(result)
        raise KeyboardInterrupt


def test_a_kill_between_a_trial_and_its_checkpoints_loses_neither(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    path = _one_trial_of(tmp_path, n_epochs=3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_experiment(str(path)), _KilledAfterTheTrial())
    assert _checkpoint_trials(tmp_path) == {}
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert outcome.results == [] and _jobs_created(fake_env) == 1  # nothing trained again
    assert _checkpoint_trials(tmp_path) == {0: [1, 2]}


class _Listening(RecordingView):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)


def test_a_paid_job_no_trial_owns_is_reported_with_its_cost(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    import openai

    path = _experiment(tmp_path, n_trials=1)
    run_sweep(load_experiment(str(path)), RecordingView())  # uploads the training file
    client = openai.OpenAI(base_url=fake_env.base_url, api_key=KEY, max_retries=0)
    training = next(iter(fake_env.state.files))
    stray = client.fine_tuning.jobs.create(
        model="gpt-4.1-nano-2025-04-14",
        training_file=training,
        metadata={"harness_study": "oa-sweep"},
    )
    time.sleep(0.5)  # the fake's job runs to the end and is billed
    view = _Listening()
    run_sweep(load_experiment(str(path)), view, add_trials=1)
    reports = [m for m in view.messages if stray.id in m]
    assert len(reports) == 1 and "belong to no trial" in reports[0] and "billed" in reports[0]
    owned = [job_id for job_id in fake_env.state.jobs if job_id != stray.id]
    assert len(owned) == 2 and all(job_id not in reports[0] for job_id in owned)


def test_a_trial_asking_for_more_rows_than_exist_says_so_and_records_the_rows_used(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    path = _experiment(tmp_path, n_trials=1)
    (tmp_path / "space.yaml").write_text(
        "n_epochs: 1\nlearning_rate_multiplier: 1.0\nbatch_size: 8\ntrain_examples: 1200\n"
    )
    view = _Listening()
    run_sweep(load_experiment(str(path)), view)
    rows = 48  # 80 rows, 20% validation, 20% test
    assert any(f"is more than the {rows} training rows" in m for m in view.messages), view.messages
    study = optuna.load_study(
        study_name="oa-sweep", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    assert study.trials[0].user_attrs["train_examples"] == rows


def test_a_paid_job_requeued_after_the_target_is_met_still_runs(
    tmp_path: Path, fake_env: FakeOpenAI
) -> None:
    # A killed worker's second trial can be requeued after the survivors have met n_trials
    # (seen with three workers on PostgreSQL): its job is paid, so it must still be resumed,
    # on its own job, and never left waiting or paid again.
    import openai

    path = _experiment(tmp_path, n_trials=1)
    run_sweep(load_experiment(str(path)), RecordingView())
    client = openai.OpenAI(base_url=fake_env.base_url, api_key=KEY, max_retries=0)
    key = "0123456789abcdef"
    paid = client.fine_tuning.jobs.create(
        model="gpt-4.1-nano-2025-04-14",
        training_file=next(iter(fake_env.state.files)),
        metadata={"harness_study": "oa-sweep", "harness_job_key": key},
    )
    study = optuna.load_study(
        study_name="oa-sweep", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    done = study.trials[0]
    study.add_trial(  # the dead worker's trial as recovery requeues it: its journal, no job id
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params={**done.params, "n_epochs": 1 + done.params.get("n_epochs", 1) % 3},
            distributions=done.distributions,
            user_attrs={"journal.job_key": key, "reserved_usd": 0.01},
            system_attrs={"failed_trial": 7, "retry_history": [7]},
        )
    )
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert [r.model.job_id for r in outcome.results] == [paid.id]
    assert _jobs_created(fake_env) == 2, "the paid job was resumed, not created again"
    states = [
        t.state for t in optuna.load_study(study_name="oa-sweep", storage=study._storage).trials
    ]
    assert TrialState.WAITING not in states and TrialState.RUNNING not in states

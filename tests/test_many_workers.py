"""Many machines: three `harness sweep` workers on one study in a real PostgreSQL, one real MLflow
tracking server, one budget, against the stateful fake OpenAI server.

Each worker is its own process in its own directory, with its own `HARNESS_HOST` (as if on its
own machine, so crashes are found by heartbeats, not pids). What the fake server created and
would bill is compared with what the study and MLflow recorded. PostgreSQL and the MLflow server
are started by the fixtures (`tests/services.py`); without PostgreSQL's binaries these tests skip
and say so. Every figure is synthetic: these tests check coordination, not models.
"""

# The fixture is imported by name, so every test that takes it "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from harness.config import load_experiment
from harness.locations import with_driver
from harness.sweep.budget import committed_usd
from harness.sweep.search_space import load_search_space
from harness.sweep.study import open_study
from tests.cli_runner import run_cli
from tests.conftest import openai_experiment
from tests.openai_fake import FakeOpenAI, openai_fake  # noqa: F401 - the fixture
from tests.services import MlflowServer, Postgres, mlflow_server, postgres_server
from tests.test_money_safety import KEY, _billed
from tests.test_shared_study import _assert_reservations_atomic, _in_threads

pytestmark = pytest.mark.slow
WORKERS = ("w1", "w2", "w3")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def tracking(
    tmp_path_factory: pytest.TempPathFactory, postgres: Postgres
) -> Iterator[MlflowServer]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


def _experiment(tmp_path: Path, storage: str, name: str, n_trials: int, budget: float) -> Path:
    # The same seed on every worker: their sampler streams differ all the same.
    return openai_experiment(
        tmp_path,
        name,
        n_trials,
        backend={"poll_max_interval": 0.2},
        study={"storage": storage},
        tracking={"experiment_name": name},
        budget_usd=budget,
    )


def _env(server: FakeOpenAI, tracking: MlflowServer, host: str) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": KEY,
        "MLFLOW_TRACKING_URI": tracking.uri,
        "HARNESS_HOST": host,  # as if each worker ran on a machine of its own
        "HARNESS_HEARTBEAT_SECONDS": "1",
        "HARNESS_GRACE_SECONDS": "4",
    }


def _workers(
    path: Path, server: FakeOpenAI, tracking: MlflowServer, tmp_path: Path
) -> dict[str, subprocess.Popen[bytes]]:
    """Start one `harness sweep` per worker name, all at once, each in a directory of its own."""
    started = {}
    for host in WORKERS:
        home = tmp_path / host
        home.mkdir()
        log = (home / "sweep.log").open("wb")
        command = [sys.executable, "-m", "harness", "sweep", str(path), "--yes"]
        started[host] = subprocess.Popen(
            command, cwd=home, env=_env(server, tracking, host), stdout=log, stderr=log
        )
    return started


def _finish(workers: dict[str, subprocess.Popen[bytes]], tmp_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for host, process in workers.items():
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"{host} did not finish: {_log(tmp_path, host)}") from None
        assert process.returncode == 0, f"{host}: {_log(tmp_path, host)}"


def _log(tmp_path: Path, host: str) -> str:
    return (tmp_path / host / "sweep.log").read_text(errors="replace")[-3000:]


def _study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=with_driver(storage))


def _trained(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "checkpoint_of" not in t.user_attrs
    ]


def _assert_shared(
    study: optuna.Study,
    server: FakeOpenAI,
    tracking: MlflowServer,
    password: str,
    budget: float,
) -> list[FrozenTrial]:
    """Jobs, budget, trials and MLflow runs as one study of many workers must leave them."""
    trials = study.get_trials(deepcopy=False)
    done = _trained(study)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == len(params), f"a configuration was drawn twice: {params}"
    used = sorted(t.user_attrs["journal.job_id"] for t in done)
    assert used == sorted(server.state.jobs), "every job created is the job of one trial: " + str(
        (
            {
                j: (o.get("metadata") or {}).get("harness_job_key")
                for j, o in server.state.jobs.items()
            },
            [(t.number, t.state.name, t.user_attrs.get("journal.job_key")) for t in trials],
        )
    )
    assert _billed(server) <= budget
    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name(study.study_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [study.user_attrs["mlflow_run_id"]], (
        "one study run, the one the study names"
    )
    parent = parents[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in runs if r not in parents} == {parent}
    assert {t.user_attrs["mlflow_run_id"] for t in done} <= {r.info.run_id for r in runs}
    # Named after the trial each records, checkpoints too (another worker may take the number a
    # checkpoint expected), and labelled synthetic: every figure here is the fake server's.
    by_id = {r.info.run_id: r for r in runs}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.info.run_name.startswith(f"t{trial.number:03d} "), run.info.run_name
        assert run.data.tags.get("synthetic") == "true", run.info.run_name
    assert not [(r.info.run_name, r.info.status) for r in runs if r.info.status == "RUNNING"]
    assert client.get_run(parent).info.status == "FINISHED"
    for run in runs:
        for value in (*run.data.tags.values(), *run.data.params.values()):
            assert password not in value, f"password in a tag or param of {run.info.run_name}"
    files = [p for p in tracking.artifacts.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files)
    leaked = [str(p) for p in files if password.encode() in p.read_bytes()]
    assert not leaked, f"password in artifacts: {leaked[:5]}"
    return done


def test_reservations_are_atomic_across_workers_on_postgresql(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = with_driver(postgres.create_database("atomic"))
    optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    _assert_reservations_atomic(url, monkeypatch)


def test_workers_opening_an_empty_database_together_create_one_study(
    tmp_path: Path, postgres: Postgres
) -> None:
    storage = postgres.create_database("first_open")
    path = _experiment(tmp_path, storage, "first", n_trials=2, budget=1.0)
    experiment = load_experiment(str(path))
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    handles = _in_threads(4, lambda _: open_study(experiment, space, join=True))
    assert sorted(h.worker for h in handles) == [0, 1, 2, 3]
    assert len({h.study._study_id for h in handles}) == 1


def test_three_workers_started_together_share_one_study_target_run_and_budget(
    tmp_path: Path, openai_fake: FakeOpenAI, postgres: Postgres, tracking: MlflowServer
) -> None:
    openai_fake.state.job_duration = 0.3
    storage = postgres.create_database("together")  # empty: the workers race to create it all
    budget, n_trials = 1.0, 6
    path = _experiment(tmp_path, storage, "together", n_trials=n_trials, budget=budget)
    _finish(_workers(path, openai_fake, tracking, tmp_path), tmp_path, timeout=150)
    logs = {host: _log(tmp_path, host) for host in WORKERS}
    for process_log in logs.values():
        assert "Traceback" not in process_log, process_log
        assert postgres.password not in process_log
    study = _study(storage, "together")
    done = _assert_shared(study, openai_fake, tracking, postgres.password, budget)
    assert len(done) == n_trials, "exactly n_trials, counting every worker's running trials"
    assert study.user_attrs["workers_joined"] == len(WORKERS)
    assert len({t.user_attrs["host"] for t in done}) >= 2, "the work was shared"


def test_three_workers_share_one_budget(
    tmp_path: Path, openai_fake: FakeOpenAI, postgres: Postgres, tracking: MlflowServer
) -> None:
    openai_fake.state.job_duration = 0.3
    storage = postgres.create_database("budget")
    per_trial = _worst_case(_experiment(tmp_path, storage, "budget", n_trials=20, budget=100.0))
    budget = 2.5 * per_trial  # two trials' worst cases fit at once, never three
    # Twenty trials cost more than the budget even if every draw is the cheapest (one epoch of
    # three): the budget, not n_trials, must end the sweep, whatever the samplers draw.
    path = _experiment(tmp_path, storage, "budget", n_trials=20, budget=budget)
    _finish(_workers(path, openai_fake, tracking, tmp_path), tmp_path, timeout=150)
    study = _study(storage, "budget")
    _assert_shared(study, openai_fake, tracking, postgres.password, budget)
    trials = study.get_trials(deepcopy=False)
    assert committed_usd(trials) <= budget
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) < 20
    assert _peak_committed(trials) <= budget + 1e-9, "all workers' reservations within budget"
    assert any("budget:" in _log(tmp_path, host) for host in WORKERS), "the budget stopped them"


def _peak_committed(trials: list[FrozenTrial]) -> float:
    """The most the ledger held at any trial's reservation: trials started by then count at
    their reservation while certainly unsettled (completed over half a second later: a trial
    reserves within that of its start), else at what settled them."""
    peak = 0.0
    for trial in trials:
        at = trial.datetime_start
        if at is None or "reserved_usd" not in trial.user_attrs:
            continue
        total = 0.0
        for other in trials:
            start, end = other.datetime_start, other.datetime_complete
            if start is None or start > at:
                continue
            unsettled = end is None or (end - at).total_seconds() > 0.5
            reserved = float(other.user_attrs.get("reserved_usd", 0.0))
            total += reserved if unsettled else committed_usd([other])
        peak = max(peak, total)
    return peak


def _worst_case(path: Path) -> float:
    """The most a trial of the experiment reserves (its most expensive corner's worst case)."""
    from harness.backends import load_backend
    from harness.data.prepare import prepare_experiment
    from harness.sweep.estimate import corner_specs

    experiment = load_experiment(str(path))
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    backend = load_backend(experiment.config.backend)
    data, _ = prepare_experiment(experiment)
    return max(backend.estimate(spec, data).total.usd for spec in corner_specs(experiment, space))


def test_a_killed_workers_trial_is_resumed_by_a_survivor_on_its_job(
    tmp_path: Path,
    openai_fake: FakeOpenAI,
    postgres: Postgres,
    tracking: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    openai_fake.state.job_duration = 3.0  # long enough to be killed while waiting on a job
    storage = postgres.create_database("killed")
    budget, n_trials = 1.0, 4
    path = _experiment(tmp_path, storage, "killed", n_trials=n_trials, budget=budget)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.uri)
    first = run_cli("study", "create", str(path), cwd=tmp_path)
    again = run_cli("study", "create", str(path), cwd=tmp_path)
    assert first.exit_code == 0 and again.exit_code == 0, first.stderr + again.stderr
    assert "(created)" in first.stdout and "(found)" in again.stdout
    assert postgres.password not in first.stdout + first.stderr
    workers = _workers(path, openai_fake, tracking, tmp_path)
    victim = _kill_when_waiting_on_a_job(workers, storage, "killed")
    killed_at = datetime.datetime.now()
    survivors = {h: p for h, p in workers.items() if h != victim.host}
    _finish(survivors, tmp_path, timeout=150)
    study = _study(storage, "killed")
    done = _assert_shared(study, openai_fake, tracking, postgres.password, budget)
    assert len(done) == n_trials
    resumed = [t for t in done if t.user_attrs["journal.job_id"] == victim.job_id]
    assert len(resumed) == 1 and resumed[0].user_attrs["host"] in survivors
    assert resumed[0].system_attrs["failed_trial"] == victim.number
    assert victim.state_after(study) == TrialState.FAIL
    start = resumed[0].datetime_start
    assert start is not None and (start - killed_at).total_seconds() < 4 + 1 + 15, (
        "resumed within the heartbeat grace (4 s), a heartbeat (1 s) and slack for a busy CI"
    )
    run = MlflowClient(tracking.uri).get_run(victim.run_id)
    assert run.info.status == "KILLED", "a survivor closed the dead worker's run"


def test_study_create_never_prints_a_password_given_in_the_storage_url(
    tmp_path: Path, postgres: Postgres, tracking: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found walking the README: `harness study create demo --set study.storage=postgresql://
    # harness:PASSWORD@...` ended on "Start workers with: harness sweep demo
    # --set=study.storage=postgresql://harness:PASSWORD@...", the password in the clear.
    storage = postgres.create_database("printed")
    path = _experiment(tmp_path, "sqlite:///unused.db", "printed", n_trials=1, budget=1.0)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.uri)
    made = run_cli("study", "create", str(path), "--set", f"study.storage={storage}", cwd=tmp_path)
    assert made.exit_code == 0, made.stderr
    assert postgres.password not in made.stdout + made.stderr
    assert "Start workers with: harness sweep" in made.stdout
    assert "PGPASSWORD" in made.stdout, "it says how the workers get the password instead"
    # Found walking the README: the printed command kept `harness:***@`, and libpq takes a
    # password in the URL over PGPASSWORD, so pasted as told it failed ("password
    # authentication failed"). Printed without the password, it works with PGPASSWORD.
    printed = f"study.storage=postgresql://harness@127.0.0.1:{postgres.port}/printed"
    assert f"--set={printed}" in made.stdout
    worker = run_cli(
        "trials",
        str(path),
        "--set",
        printed,
        cwd=tmp_path,
        env={"PGPASSWORD": postgres.password},
    )
    assert worker.exit_code == 0, worker.stderr


class _Victim:
    def __init__(self, trial: FrozenTrial) -> None:
        self.number = trial.number
        self.job_id = str(trial.user_attrs["journal.job_id"])
        self.run_id = str(trial.user_attrs["mlflow_run_id"])
        self.host = str(trial.user_attrs["host"])

    def state_after(self, study: optuna.Study) -> TrialState:
        return study.trials[self.number].state


def _kill_when_waiting_on_a_job(
    workers: dict[str, subprocess.Popen[bytes]], storage: str, name: str, timeout: float = 90
) -> _Victim:
    """SIGKILL the first worker seen with a trial whose job is on the server, mid-training
    (whichever worker it is: on a loaded machine one may start late and find no trial left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = _study(storage, name).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            running = []
        with_job = [
            t
            for t in running
            if t.user_attrs.get("journal.job_id") and workers[t.user_attrs["host"]].poll() is None
        ]
        if with_job:
            process = workers[with_job[0].user_attrs["host"]]
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            return _Victim(with_job[0])
        assert any(p.poll() is None for p in workers.values()), "every worker finished first"
        time.sleep(0.1)
    raise AssertionError("no worker ever waited on a job")

"""Money is safe whatever fails: no paid job twice, no budget overrun, nothing left RUNNING, no
configuration repeated, across server faults and kills at every stage of a trial.

Driven against the stateful fake OpenAI server: it loses replies after committing (a job created,
then a 500), fails at rates, and a real `harness sweep` process is killed with SIGKILL at chosen
moments and run again. What the server created and billed is compared with what the study and
MLflow recorded. Every figure is synthetic: these tests check money plumbing, not models.
"""

# The fixture is imported by name, so every test that takes it "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness.backends.hosted.pricing import load_price_table
from harness.config import load_experiment
from harness.sweep.loop import run_sweep
from tests.conftest import openai_experiment
from tests.openai_fake import FakeOpenAI, openai_fake  # noqa: F401 - the fixture
from tests.test_openai_sweep import RecordingView

pytestmark = pytest.mark.slow
KEY = "sk-harness-money-test-0123456789"
JOBS = "/fine_tuning/jobs"
MODEL = "gpt-4.1-nano-2025-04-14"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def _experiment(tmp_path: Path, n_trials: int, budget: float, **backend: Any) -> Path:
    return openai_experiment(tmp_path, "money", n_trials, backend=backend, budget_usd=budget)


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="money", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")


def _completed(tmp_path: Path) -> int:
    try:
        return len(_study(tmp_path).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception:  # no storage or no study yet
        return 0


def _billed(server: FakeOpenAI) -> float:
    """What the provider would bill for training: every job's trained tokens at list price."""
    price = load_price_table().lookup(MODEL)
    return sum(
        price.training_usd(job.get("trained_tokens") or 0) for job in server.state.jobs.values()
    )


def _assert_money_safe(tmp_path: Path, server: FakeOpenAI, budget: float) -> list[Any]:
    """Each job belongs to one completed trial; billing within budget; nothing left RUNNING."""
    study = _study(tmp_path)
    trials = study.get_trials(deepcopy=False)
    done = [
        t for t in trials if t.state == TrialState.COMPLETE and "checkpoint_of" not in t.user_attrs
    ]
    jobs = server.state.jobs
    used = [t.user_attrs["journal.job_id"] for t in done]
    assert sorted(used) == sorted(jobs), "every job created is the job of one completed trial"
    assert all(job["status"] == "succeeded" for job in jobs.values())
    assert _billed(server) <= budget
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == len(params), "no configuration was trained twice"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    return done


def test_lost_create_replies_and_flaky_endpoints_never_pay_twice(
    tmp_path: Path, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.base_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    state = openai_fake.state
    state.job_duration = 0.3
    # Half the job creations commit on the server and then answer 500; other calls fail often.
    state.fail_next(JOBS, 500, method="POST", after=True, rate=0.5, count=1000)
    state.fail_next(JOBS, 429, method="POST", rate=0.2, count=1000, retry_after=0.01)
    state.fail_next("/fine_tuning/jobs/*", 500, method="GET", rate=0.2, count=1000)
    state.fail_next("/chat/completions", 429, rate=0.2, count=1000, retry_after=0.01)
    budget = 1.0
    path = _experiment(tmp_path, n_trials=6, budget=budget, max_retries=8)
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 6, outcome.failures
    assert state.count("POST", JOBS, status=500) > 0, "the fault plan must have fired"
    done = _assert_money_safe(tmp_path, openai_fake, budget)
    assert len(done) == 6 and len(state.jobs) == 6


def _sweep_process(path: Path, server: FakeOpenAI, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "harness", "sweep", str(path), "--yes"]
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _kill_when(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 180
) -> bool:
    """SIGKILL the process once `ready()` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            return True
        time.sleep(0.02)
    raise AssertionError("the moment to kill at never came")


def test_five_kills_at_every_stage_still_pay_each_job_once(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    state = openai_fake.state
    state.job_duration = 2.0  # long enough to be killed while waiting on a job
    budget = 1.0
    path = _experiment(tmp_path, n_trials=4, budget=budget)

    def requests(method: str, pattern: str) -> Callable[[], Callable[[], bool]]:
        def start() -> Callable[[], bool]:
            before = state.count(method, pattern, status=200)
            return lambda: state.count(method, pattern, status=200) > before

        return start

    def running_job() -> Callable[[], bool]:
        return lambda: any(job["status"] == "running" for job in state.jobs.values())

    def completed_trial() -> Callable[[], bool]:
        before = _completed(tmp_path)
        return lambda: _completed(tmp_path) > before

    moments = [
        requests("POST", "/files"),  # right after an upload
        requests("POST", JOBS),  # a job has just been created
        running_job,  # waiting on a job
        requests("POST", "/chat/completions"),  # evaluating a checkpoint
        completed_trial,  # logging a finished trial and recording its checkpoints
    ]
    kills = 0
    for moment in moments:
        ready = moment()
        kills += _kill_when(_sweep_process(path, openai_fake, tmp_path), ready)
    assert kills >= 4
    final = _sweep_process(path, openai_fake, tmp_path)
    output = final.communicate(timeout=400)[0].decode()
    assert final.returncode == 0, output[-3000:]
    done = _assert_money_safe(tmp_path, openai_fake, budget)
    assert len(done) == 4, output[-3000:]

"""No Azure deployment left billing: a real `harness sweep` killed while a slow deployment is being
made for scoring, then run again, deletes every deployment it made and pays each job once.

Azure bills a deployment's hosting by the hour for as long as it exists, used or not; a sweep
killed between the `PUT` and the `DELETE` would leave one billing forever unless the name was
recorded first and looked for again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness.backends.openai._azure import DEPLOYMENT_NOTE
from harness.tracking.record import journal_key
from tests.azure_fake import FakeAzure
from tests.test_providers import (
    Provider,
    _assert_each_job_paid_once,
    _experiment,
    _study,
    _sweep_process,
    azure_backend,
)

KEY, TOKEN = "az-test-key-0123456789", "arm-token"
DEPLOY_SECONDS = 4.0  # long enough to kill the sweep while the deployment is being made
# For a call stopped while its deployment is made: 4 s was once outlasted by this test's own
# stall on a loaded machine, and evaluate went on to score (a flaky failure, not a defect).
STOPPED_DEPLOY_SECONDS = 60.0


@pytest.fixture
def slow_azure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Provider, FakeAzure]]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    with FakeAzure(key=KEY, token=TOKEN, job_duration=0.3, deploy_seconds=DEPLOY_SECONDS) as azure:
        state = azure.inner.state
        provider = Provider(
            "azure",
            {"AZURE_OPENAI_API_KEY": KEY, "AZURE_ACCESS_TOKEN": TOKEN},
            # One deployment per scoring: validation, then test.
            azure_backend(azure, evaluate_checkpoints=False),
            lambda: list(state.jobs),
            lambda: state.count("POST", "/fine_tuning/jobs", status=200),
            lambda: None,
            lambda: sum(j.get("trained_tokens") or 0 for j in state.jobs.values()),
        )
        for key, value in provider.env.items():
            monkeypatch.setenv(key, value)
        yield provider, azure


@pytest.mark.slow
def test_a_sweep_killed_while_a_deployment_is_made_leaves_none_billing(
    tmp_path: Path, slow_azure: tuple[Provider, FakeAzure]
) -> None:
    provider, azure = slow_azure
    path = _experiment(tmp_path, provider, 1)
    first = _sweep_process(path, provider, tmp_path)
    deadline = time.monotonic() + 120
    while not azure.arm.live and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[0].decode()[-2000:]
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # the deployment is still being made: nothing deletes it
    first.wait(timeout=10)
    left = sorted(azure.arm.live)
    assert len(left) == 1
    # its name was in the trial's journal before the PUT
    notes = [t.user_attrs.get(journal_key(DEPLOYMENT_NOTE)) for t in _study(tmp_path).trials]
    assert left[0] in notes
    jobs_before = set(provider.jobs())

    second = _sweep_process(path, provider, tmp_path)
    output = second.communicate(timeout=240)[0].decode()
    assert second.returncode == 0, output[-3000:]
    assert "model deployment(s)" in output and left[0] in output  # reported as deleted
    assert azure.arm.live == {}
    made = azure.deployments_made
    assert len(made) >= 3 and all(d.deleted is not None for d in made)  # killed one + 2 scorings
    assert all(d.tags == {"harness_study": "prov"} for d in made)
    assert set(provider.jobs()) == jobs_before  # the resumed trial reattached to its job
    _assert_each_job_paid_once(tmp_path, provider, 1)
    complete = [t for t in _study(tmp_path).trials if t.state == TrialState.COMPLETE]
    assert complete and all(not t.user_attrs.get(journal_key(DEPLOYMENT_NOTE)) for t in complete)


def test_an_evaluate_stopped_while_its_deployment_is_made_leaves_none_billing(
    tmp_path: Path, slow_azure: tuple[Provider, FakeAzure]
) -> None:
    """`harness evaluate --model <fine-tuned>` on Azure deploys the model to score it. Stopped by
    `kill` or `timeout` (SIGTERM) meanwhile, it died on the spot: its `finally` never ran, and
    the deployment stayed, billing by the hour, under no study a sweep cleans up. SIGTERM is
    now Ctrl-C there too: the deployment is deleted before it exits."""
    provider, azure = slow_azure
    # Made slower than any stall of this test on a busy machine: stopped in time, it never waits.
    azure.arm.deploy_seconds = STOPPED_DEPLOY_SECONDS
    process = _evaluate_process(tmp_path, provider, azure)
    _stop_while_it_deploys(process, azure)


def test_a_deployment_a_killed_evaluate_left_is_the_studys_to_clean_up(
    tmp_path: Path, slow_azure: tuple[Provider, FakeAzure]
) -> None:
    """Killed outright (SIGKILL, the machine lost), `harness evaluate` cannot delete the
    deployment it was making. It was tagged with no study, so no sweep's clean-up (the study's
    deployments no trial holds) ever found it: billing for good. It now carries the
    experiment's study, and the next `harness sweep` of it deletes it."""
    from harness.backends import load_backend
    from harness.config import load_experiment

    provider, azure = slow_azure
    # Made slower than any stall of this test on a busy machine: stopped in time, it never waits.
    azure.arm.deploy_seconds = STOPPED_DEPLOY_SECONDS
    process = _evaluate_process(tmp_path, provider, azure)
    deadline = time.monotonic() + 120
    while not azure.arm.live and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0].decode()[-2000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    left = sorted(azure.arm.live)
    assert left
    experiment = load_experiment(str(tmp_path / "prov.yaml"))
    backend = load_backend(experiment.config.backend)
    assert backend.release_deployments(experiment.study_name, ()) == left  # what a sweep does
    assert azure.arm.live == {}


def _evaluate_process(
    tmp_path: Path, provider: Provider, azure: FakeAzure
) -> subprocess.Popen[bytes]:
    """`harness evaluate` of a model fine-tuned elsewhere on the fake Azure resource."""
    azure.arm.exists = lambda model: True  # a model fine-tuned elsewhere on this resource
    path = _experiment(tmp_path, provider, 1)
    tuned = "gpt-4.1-nano-2025-04-14.ft-0123456789abcdef"
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "evaluate", str(path), "--model", tuned],
        cwd=tmp_path,
        env={**os.environ, **provider.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_a_predict_stopped_while_its_deployment_is_made_leaves_none_billing(
    tmp_path: Path, slow_azure: tuple[Provider, FakeAzure]
) -> None:
    """A promoted Azure model is deployed for each `harness predict` and deleted after. Stopped
    by `kill` or `timeout` (SIGTERM) meanwhile, predict died on the spot (exit 143, nothing
    said) and left the deployment, tagged with no study, billing by the hour; Ctrl-C deleted
    it. SIGTERM is now Ctrl-C there too, and the deployment carries the study the model came
    from, so one a predict killed outright left is that study's next sweep's to delete."""
    provider, azure = slow_azure
    path = _experiment(tmp_path, provider, 1)
    output = _sweep_process(path, provider, tmp_path).communicate(timeout=240)[0].decode()
    assert azure.arm.live == {}, output[-3000:]
    cli = [sys.executable, "-m", "harness"]
    promoted = subprocess.run(
        [*cli, "promote", "prov"], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    azure.arm.deploy_seconds = STOPPED_DEPLOY_SECONDS
    process = subprocess.Popen(
        [*cli, "predict", "prov-classifier", "Was it good?"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _stop_while_it_deploys(process, azure)
    # Killed outright, it could not delete it: the deployment carries the model's study (it
    # carried none, so no sweep's clean-up would ever have found it).
    assert azure.deployments_made[-1].tags == {"harness_study": "prov"}


def _stop_while_it_deploys(process: subprocess.Popen[bytes], azure: FakeAzure) -> None:
    """SIGTERM `process` while its deployment is being made: it exits 143 having deleted it,
    and says nothing of the key."""
    deadline = time.monotonic() + 120
    while not azure.arm.live and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0].decode()[-2000:]
        time.sleep(0.02)
    assert azure.arm.live, "no deployment was made"
    process.send_signal(signal.SIGTERM)
    said = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 143, said[-3000:]
    assert azure.arm.live == {}, said
    assert KEY not in said

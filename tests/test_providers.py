"""Every hosted provider beyond OpenAI, on its own fake server: a whole sweep with lost create
replies, the budget, and a killed `harness sweep` that resumes paying each job once.

Providers: Nebius (OpenAI's API, LoRA extras; the OpenAI fake), Azure OpenAI (`api-key`,
`api-version`, deployments: `tests/azure_fake`) and Together AI (its own REST API:
`tests/together_fake`). Every figure is synthetic: these tests check plumbing and money.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from harness.config import load_experiment
from harness.sweep.loop import run_sweep
from tests.azure_fake import FakeAzure
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import openai_experiment
from tests.openai_fake import FakeOpenAI
from tests.test_openai_sweep import RecordingView
from tests.together_fake import FakeTogether

LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct"
TOGETHER_LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
NANO = "gpt-4.1-nano-2025-04-14"
PRICE = {"training_per_1m": 2.0, "fine_tuned_input_per_1m": 0.5, "fine_tuned_output_per_1m": 1.0}
PRICE_NOTE = {"source": "test figure", "as_of": "2026-11-30"}


@dataclass
class Provider:
    """One provider's fake, how to reach it, and what it created and would bill."""

    name: str
    env: dict[str, str]
    backend: dict[str, Any]
    jobs: Callable[[], list[str]]  # ids of every job the server holds
    creates: Callable[[], int]  # create-job requests it answered 200
    lose_creates: Callable[[], None]  # half of creations commit, then answer 500
    billed_tokens: Callable[[], int]


def _nebius() -> Iterator[Provider]:
    with FakeOpenAI(job_duration=0.3, base_models={LLAMA: LLAMA}, dialect="nebius") as server:
        yield Provider(
            "nebius",
            {"NEBIUS_API_KEY": "nb-test-key-0123456789"},
            {
                "provider": "nebius",
                "model": LLAMA,
                "base_url": server.base_url,
                "hyperparameters": {"lora": True, "lora_r": 8, "lora_alpha": 16},
                "prices": {LLAMA: {**PRICE, **PRICE_NOTE}},
            },
            lambda: list(server.state.jobs),
            lambda: server.state.count("POST", "/fine_tuning/jobs", status=200),
            lambda: server.state.fail_next(
                "/fine_tuning/jobs", 500, method="POST", after=True, rate=0.5, count=100
            ),
            lambda: sum(j.get("trained_tokens") or 0 for j in server.state.jobs.values()),
        )


def azure_backend(azure: FakeAzure, **more: Any) -> dict[str, Any]:
    """The `backend:` of an Azure experiment on `azure`, priced with test figures."""
    return {
        "provider": "azure",
        "base_url": azure.endpoint,
        "azure": {
            "resource": "harness-test",
            "subscription_id": "sub",
            "resource_group": "rg",
            "management_url": azure.management_url,
        },
        "prices": {NANO: {**PRICE, "hosting_per_hour": 0.01, **PRICE_NOTE}},
        **more,
    }


def _azure() -> Iterator[Provider]:
    with FakeAzure(key="az-test-key-0123456789", token="arm-token") as azure:
        yield Provider(
            "azure",
            {"AZURE_OPENAI_API_KEY": "az-test-key-0123456789", "AZURE_ACCESS_TOKEN": "arm-token"},
            azure_backend(azure),
            lambda: list(azure.inner.state.jobs),
            lambda: azure.inner.state.count("POST", "/fine_tuning/jobs", status=200),
            lambda: azure.inner.state.fail_next(
                "/fine_tuning/jobs", 500, method="POST", after=True, rate=0.5, count=100
            ),
            lambda: sum(j.get("trained_tokens") or 0 for j in azure.inner.state.jobs.values()),
        )


def _together() -> Iterator[Provider]:
    with FakeTogether(job_duration=0.3) as server:
        state = server.state
        # Together quotes and bills at the row's rate: each job is quoted, then billed.
        state.price_per_token = PRICE["training_per_1m"] / 1e6

        def billed() -> int:
            return sum(
                job.tokens * int(job.request.get("n_epochs", 1)) for job in state.jobs.values()
            )

        yield Provider(
            "together",
            {"TOGETHER_API_KEY": "tg-test-key-0123456789"},
            {
                "kind": "together",
                "model": TOGETHER_LLAMA,
                "base_url": server.base_url,
                "hyperparameters": {"lora_r": 8, "warmup_ratio": 0.05},
                "prices": {TOGETHER_LLAMA: {**PRICE, **PRICE_NOTE}},
            },
            lambda: list(state.jobs),
            lambda: state.count("POST", "/v1/fine-tunes", status=200),
            lambda: state.fail_next("POST", "/v1/fine-tunes", 500, after=True, rate=0.5, count=100),
            billed,
        )


FAKES = {"nebius": _nebius, "azure": _azure, "together": _together}


@pytest.fixture(params=sorted(FAKES))
def provider(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Provider]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for fake in FAKES[request.param]():
        for key, value in fake.env.items():
            monkeypatch.setenv(key, value)
        yield fake


def _experiment(tmp_path: Path, provider: Provider, n_trials: int, **extra: Any) -> Path:
    return openai_experiment(tmp_path, "prov", n_trials, backend=provider.backend, **extra)


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="prov", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")


def _assert_each_job_paid_once(tmp_path: Path, provider: Provider, n_trials: int) -> None:
    trials = _study(tmp_path).get_trials(deepcopy=False)
    done = [
        t for t in trials if t.state == TrialState.COMPLETE and "checkpoint_of" not in t.user_attrs
    ]
    assert len(done) == n_trials
    assert sorted(t.user_attrs["journal.job_id"] for t in done) == sorted(provider.jobs())
    assert all(t.user_attrs.get("journal.synthetic") == "true" for t in done)
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_a_sweep_with_lost_create_replies_pays_each_job_once_and_stops_at_the_budget(
    tmp_path: Path, provider: Provider
) -> None:
    from harness.backends import load_backend
    from harness.data.prepare import prepare_experiment
    from harness.sweep.estimate import corner_specs
    from harness.sweep.search_space import load_search_space

    experiment = load_experiment(str(_experiment(tmp_path, provider, 4)))
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    backend = load_backend(experiment.config.backend)
    data, _ = prepare_experiment(experiment)
    worst = max(backend.estimate(s, data).total.usd for s in corner_specs(experiment, space))
    budget = 1.5 * worst  # room for one trial's worst case, never two at once
    provider.lose_creates()
    path = _experiment(tmp_path, provider, 4, budget_usd=budget)
    outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda w, b: True)
    # Trials run while their reservations fit (a draw that does not runs cut to fewer epochs or
    # examples), and stop when none does.
    assert not outcome.failures
    assert outcome.stopped is None or outcome.stopped.startswith("budget")
    assert 1 <= len(outcome.results) <= 4
    _assert_each_job_paid_once(tmp_path, provider, len(outcome.results))
    assert sum(r.total_cost.usd for r in outcome.results) <= budget
    assert provider.billed_tokens() * PRICE["training_per_1m"] / 1e6 <= budget


def _sweep_process(path: Path, provider: Provider, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **provider.env}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "sweep", str(path), "--yes"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_jobs_instead_of_paying_again(
    tmp_path: Path, provider: Provider
) -> None:
    path = _experiment(tmp_path, provider, 2)
    first = _sweep_process(path, provider, tmp_path)
    deadline = time.monotonic() + 90
    while provider.creates() == 0 and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[0].decode()[-2000:]
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # a job exists, its trial has not finished
    first.wait(timeout=10)
    before = set(provider.jobs())
    assert before
    second = _sweep_process(path, provider, tmp_path)
    output = second.communicate(timeout=240)[0].decode()
    assert second.returncode == 0, output[-3000:]
    assert before <= set(provider.jobs())
    _assert_each_job_paid_once(tmp_path, provider, 2)


def test_an_unpriced_provider_model_is_a_clear_error_before_anything_is_spent(
    tmp_path: Path, provider: Provider
) -> None:
    path = _experiment(tmp_path, provider, 2)
    config = yaml.safe_load(path.read_text())
    config["backend"]["prices"] = {}
    config["backend"]["model"] = "a-model-the-table-lacks"
    path.write_text(yaml.safe_dump(config))
    for command in ("estimate", "sweep"):
        # A sweep asks Nebius's models API, which does not list the model: no price set for it
        # would help (its jobs would be refused), so backend.model is named instead.
        unlisted = command == "sweep" and provider.name == "nebius"
        needle = "does not list a-model-the-table-lacks" if unlisted else "backend.prices."
        assert_clean_error(run_cli(command, str(path)), needle)
    assert provider.creates() == 0 and not provider.jobs()
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


@pytest.mark.parametrize("name", ["together_llama8b", "azure_gpt41nano"])
def test_estimate_prices_the_shipped_provider_examples_from_sourced_rows(name: str) -> None:
    from tests.conftest import ROOT

    result = run_cli("estimate", str(ROOT / "experiments" / f"{name}.yaml"))
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "nothing was spent" in out and "EXAMPLE FIGURE" not in out
    assert "issue #24" in out and re.search(r"as of \d{4}-\d{2}-\d{2}; \d+ days old", out)


def test_nebius_estimate_offline_names_the_field_and_the_live_source() -> None:
    """Nebius publishes no training price: offline, the estimate stops and says where to get it."""
    from tests.conftest import ROOT

    path = str(ROOT / "experiments" / "nebius_llama8b.yaml")
    result = run_cli("estimate", path)
    model = '"meta-llama/Meta-Llama-3.1-8B-Instruct"'  # quoted: the name holds a dot
    assert_clean_error(result, f"pass --set 'backend.prices.{model}.fine_tuned_input_per_1m=...'")
    assert "harness prices refresh" in result.stderr
    # What it says works (found in a real run: the unquoted path it gave was "unknown key").
    sets = [
        f"backend.prices.{model}.{field}=0.4"
        for field in ("training_per_1m", "fine_tuned_input_per_1m", "fine_tuned_output_per_1m")
    ]
    priced = run_cli("estimate", path, *(arg for item in sets for arg in ("--set", item)))
    assert priced.exit_code == 0, priced.stderr
    assert "training $0.4, fine-tuned input $0.4, output $0.4" in priced.stdout
    unbalanced = run_cli("estimate", path, "--set", 'backend.prices."x.training_per_1m=1')
    assert_clean_error(unbalanced, "a part that holds a dot in double quotes")


@pytest.mark.parametrize(
    ("backend", "needle"),
    [
        ({"kind": "openai", "hyperparameters": {"lora_r": 8}}, "allowed: none"),
        (
            {"kind": "openai", "provider": "nebius", "hyperparameters": {"lora_rank": 8}},
            "allowed: warmup_ratio, weight_decay",
        ),
        ({"kind": "openai", "provider": "nebius", "hyperparameters": {"lora_r": 0.5}}, "lora_r"),
        ({"kind": "together", "hyperparameters": {"n_evals": 2}}, "allowed: warmup_ratio"),
        ({"kind": "openai", "provider": "azure"}, "backend.azure"),
    ],
)
def test_an_extra_a_provider_does_not_take_is_a_config_error_naming_the_allowed(
    tmp_path: Path, backend: dict[str, Any], needle: str
) -> None:
    path = openai_experiment(tmp_path, "extras", 1, backend=backend)
    assert_clean_error(run_cli("estimate", str(path)), needle)


def test_estimate_itemises_hosting_for_a_standard_azure_deployment() -> None:
    from tests.conftest import ROOT

    path = str(ROOT / "experiments" / "azure_gpt41nano.yaml")
    developer = run_cli("estimate", path)
    standard = run_cli("estimate", path, "--set", "backend.azure.deployment_sku=standard")
    assert developer.exit_code == 0 and standard.exit_code == 0, standard.stderr
    column = "┃ hosting $ ┃"
    assert column not in developer.stdout  # Developer deployments bill no hosting
    assert column in standard.stdout and "$1.7 an hour" in " ".join(standard.stdout.split())
    # The row's hourly rate is named either way; on Developer it must not read as part of the
    # estimate (it was "hosting $1.7 an hour a deployment exists" with no hosting priced).
    unbilled = "not billed by this sweep"
    assert unbilled in " ".join(developer.stdout.split())
    assert unbilled not in " ".join(standard.stdout.split())

"""The shipped hosted experiments, as a user runs them: priced from the sourced price table.

`experiments/together_llama8b.yaml` and `experiments/azure_gpt41nano.yaml` are swept as shipped
(no `prices:` in them, so every dollar comes from `harness/backends/hosted/prices.yaml`), pointed
at the stateful fakes with `--set` and cut to one small trial. What the fakes answer is synthetic;
what is checked is that the sweep priced and recorded the table's dated rows, and that what it
committed is the trained tokens at the table's rate plus scoring, never above the reservation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness.backends.hosted.pricing import read_rows, shipped_table_path
from harness.config import load_experiment
from harness.sweep.loop import run_sweep
from harness.tracking.record import MLFLOW_RUN_ID, PRICES_TAG
from tests.azure_fake import FakeAzure
from tests.test_openai_sweep import RecordingView
from tests.together_fake import FakeTogether

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "dataset.max_rows=120",
    "study.n_trials=1",
    "budget_usd=1.0",
    "backend.poll_interval=0.02",
    "backend.poll_max_interval=0.05",
    "search_space.n_epochs=1",
    "search_space.batch_size=8",
    "search_space.learning_rate_multiplier=1.0",
]


def _sweep(tmp_path: Path, name: str, overrides: list[str]) -> tuple[optuna.Study, str]:
    experiment = load_experiment(str(ROOT / "experiments" / f"{name}.yaml"), SMALL + overrides)
    assert "prices" not in experiment.raw["backend"], "shipped experiments carry no prices"
    outcome = run_sweep(experiment, RecordingView())
    assert len(outcome.results) == 1, outcome.stopped
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    tags = MlflowClient().get_run(study.user_attrs[MLFLOW_RUN_ID]).data.tags
    return study, tags[PRICES_TAG]


def _row(provider: str, model: str) -> Any:
    rows = read_rows(shipped_table_path())
    (row,) = [p for p in rows if p.provider == provider and p.model == model]
    return row


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def together(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTogether]:
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-shipped-0123456789abcdef")
    with FakeTogether(job_duration=0.2) as fake:
        yield fake


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzure]:
    key, token = "az-shipped-0123456789", "arm-token"
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", key)
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", token)
    with FakeAzure(key=key, token=token, job_duration=0.2) as fake:
        yield fake


def _committed(study: optuna.Study) -> tuple[float, float, int]:
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    attrs = trial.user_attrs
    return float(attrs["cost_usd"]), float(attrs["reserved_usd"]), int(attrs["trained_tokens"])


def test_the_shipped_together_experiment_is_priced_from_the_table(
    home: Path, together: FakeTogether
) -> None:
    study, used = _sweep(home, "together_llama8b", [f"backend.base_url={together.base_url}"])
    row = _row("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference")
    assert row.source in used and f"as of {row.as_of}" in used
    cost, reserved, trained = _committed(study)
    assert trained * row.training_per_1m / 1e6 <= cost <= reserved


def test_the_shipped_azure_experiment_is_priced_from_the_table(
    home: Path, azure: FakeAzure
) -> None:
    overrides = [
        f"backend.base_url={azure.endpoint}",
        f"backend.azure.management_url={azure.management_url}",
    ]
    study, used = _sweep(home, "azure_gpt41nano", overrides)
    row = _row("azure", "gpt-4.1-nano-2025-04-14")
    assert row.source in used and f"as of {row.as_of}" in used
    cost, reserved, trained = _committed(study)
    assert trained * row.training_per_1m / 1e6 <= cost <= reserved
    made = azure.deployments_made
    assert made and all(d.deleted is not None for d in made), "every deployment was deleted"
    assert {d.sku for d in made} == {"DeveloperTier"}, "scored without a hosting fee"

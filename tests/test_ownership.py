"""Hosting in the cost of ownership: a deployment billed by the hour (Azure OpenAI) is paid for
every hour of the month, so the report takes it out of the per-request price and counts a
month of it at the hourly rate the evaluation paid.

Known-truth cases on constructed records, then one sweep on the Azure fake through
`harness report`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from harness.config import load_experiment
from harness.records import Cost, usd
from harness.report.answer import answer_lines
from harness.report.build import build_report
from harness.report.model import Ownership, ReportOptions, TrialRow
from harness.report.sections import HOURS_PER_MONTH, ownership
from harness.sweep.loop import run_sweep
from harness.tracking.record import TrialRecord, hosting_metrics
from tests.cli_runner import run_cli
from tests.conftest import openai_experiment
from tests.test_openai_sweep import RecordingView
from tests.test_providers import _azure

N_TEST = 100
REQUESTS = 1_000


def _row(number: int, record: TrialRecord) -> TrialRow:
    return TrialRow(number, {}, 0.8, record.cost_usd or 0.0, record, None)


def _hosted(number: int = 0, **extra: Any) -> TrialRow:
    """Eval cost $10 of which $8 hosting over 2 hours; training $5."""
    record = TrialRecord(
        cost_usd=15.0,
        train_cost_usd=5.0,
        eval_cost_usd=10.0,
        eval_hosting_usd=8.0,
        eval_hosting_hours=2.0,
        **extra,
    )
    return _row(number, record)


def _by_number(rows: list[TrialRow]) -> dict[int, Ownership]:
    return {o.number: o for o in ownership(rows, N_TEST, REQUESTS)}


def test_hosting_is_counted_per_month_not_spread_over_the_test_requests() -> None:
    own = _by_number([_hosted()])[0]
    # (10 - 8) / 100 test examples; $8 / 2 h = $4 an hour, all 730 hours of a month.
    assert own.per_request == pytest.approx(0.02)
    assert own.hosting_per_month == pytest.approx(4.0 * 730)
    assert own.monthly == pytest.approx(0.02 * 1_000 + 2920.0)
    assert own.months(12) == pytest.approx(5.0 + 12 * 2940.0)
    assert HOURS_PER_MONTH == 730


def test_a_trial_without_hosting_is_priced_per_request_only() -> None:
    record = TrialRecord(cost_usd=6.0, train_cost_usd=5.0, eval_cost_usd=1.0)
    own = _by_number([_row(0, record)])[0]
    assert own.per_request == pytest.approx(0.01)
    assert own.monthly == pytest.approx(10.0)
    assert own.hosting_per_month is None


def test_a_checkpoint_is_priced_and_hosted_as_its_parent() -> None:
    # Its own scoring came from a cache (no cost, no deployment): the parent's rates apply.
    checkpoint = TrialRecord(cost_usd=4.0, train_cost_usd=3.0, eval_cost_usd=0.0, checkpoint_of=0)
    own = _by_number([_hosted(0), _row(1, checkpoint)])
    assert own[1].per_request == pytest.approx(0.02)
    assert own[1].hosting_per_month == pytest.approx(2920.0)
    assert own[1].monthly == pytest.approx(2940.0)
    assert own[1].training == 3.0


def test_hosting_is_recorded_only_where_it_was_billed_and_read_back_absent_as_zero() -> None:
    hosted = Cost(usd=10.0, hosting_usd=8.0, hosting_hours=2.0)
    attrs = {"eval_cost_usd": 10.0, **hosting_metrics(hosted)}
    assert TrialRecord.from_attrs(attrs).eval_hosting_hours == 2.0
    assert hosting_metrics(Cost(usd=1.0)) == {}
    plain = TrialRecord.from_attrs({"eval_cost_usd": 1.0})
    assert (plain.eval_hosting_usd, plain.eval_hosting_hours) == (0.0, 0.0)


HOSTING_PER_HOUR = 1.7


@pytest.mark.slow
def test_an_azure_sweep_reports_a_month_of_hosting_at_the_price_rows_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for azure in _azure():
        for key, value in azure.env.items():
            monkeypatch.setenv(key, value)
        backend = dict(azure.backend)
        (model, price), *_ = backend["prices"].items()
        backend["prices"] = {model: {**price, "hosting_per_hour": HOSTING_PER_HOUR}}
        # Scored on a Standard deployment, which bills hosting by the hour (the default,
        # Developer, bills none while scoring).
        backend["azure"] = {**backend["azure"], "deployment_sku": "standard"}
        path = openai_experiment(tmp_path, "hosted", 1, backend=backend)
        outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda w, b: True)
        assert len(outcome.results) == 1, outcome.failures
        out = tmp_path / "report"
        result = run_cli("report", str(path), "--out", str(out), "--monthly-requests", "1000")
        assert result.exit_code == 0, result.output

    study = optuna.load_study(study_name="hosted", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    record = TrialRecord.from_attrs(study.trials[0].user_attrs)
    assert record.eval_hosting_hours >= 1  # a started hour is billed whole
    assert record.eval_hosting_usd == pytest.approx(HOSTING_PER_HOUR * record.eval_hosting_hours)
    logged = MlflowClient().get_run(str(record.mlflow_run_id)).data.metrics
    assert logged["eval_hosting_usd"] == pytest.approx(record.eval_hosting_usd)
    assert logged["eval_hosting_hours"] == record.eval_hosting_hours
    month = HOSTING_PER_HOUR * 730  # $1,241 (`usd`: whole dollars from $100)
    markdown = (out / "report.md").read_text()
    table = markdown.split("## Total cost of ownership", 1)[1]
    header = next(line for line in table.splitlines() if line.startswith("| trial"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    trial_line = next(line for line in table.splitlines() if line.startswith("| trial 0"))
    # report.md escapes `$` in its cells (GitHub would read a pair of them as maths)
    row = (c.strip().replace("\\$", "$") for c in trial_line.strip("|").split("|"))
    values = dict(zip(cells, row, strict=True))
    assert values["hosting / month"] == usd(month)
    # Spread over the 16 test requests, an hour of hosting would be ~$106 per 1,000 requests.
    assert _dollars(values["per 1,000 requests"]) < 0.5
    monthly = _dollars(values["per month (1,000)"])
    assert round(month) <= monthly < month + 10  # requests to a nano model cost cents (whole $)
    # The answer's running-cost line names the hosting share when the trial is the choice.
    report = build_report(load_experiment(str(path)), ReportOptions(monthly_requests=1000))
    trial = next(t for t in report.trials if not t.is_baseline)
    chosen = replace(report, recommendation=replace(report.recommendation, chosen=trial))
    running = next(line for line in answer_lines(chosen) if line.startswith("Running it"))
    assert f"a month, of which {usd(month)} hosting, at 1,000 requests" in running


def _dollars(cell: str) -> float:
    return float(re.sub(r"[$,]", "", cell))

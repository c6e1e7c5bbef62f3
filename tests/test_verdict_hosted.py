"""The verdict on a hosted study through the fake OpenAI server: a real sweep (the real SDK over
HTTP, a real Optuna storage and MLflow store), then `harness report` at two values per point.

The data are short reviews with a quarter of their labels flipped, so TF-IDF + logistic
regression reaches about 72%. The fake's models answer by an oracle (synthetic numbers, never a
result): a job's checkpoint after epoch 1, 2 and 3 gets each example's label right with
probability 0.74, 0.78 and 0.86, independently per example. At $100 a point the report must buy
the clearly better fine-tuned model; at $0.0001 a point no fine-tuned model is worth its price,
and it must stay with the cheapest adequate option, TF-IDF. Either way its first figure is the
chosen model's test accuracy.
"""

# The fixture is imported by name, so every test that takes it "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from harness.config import load_experiment
from harness.sweep.loop import run_sweep
from tests.cli_runner import run_cli
from tests.conftest import openai_experiment, review_rows, write_csv
from tests.openai_fake import FakeOpenAI, openai_fake  # noqa: F401 - the fixture
from tests.test_openai_sweep import RecordingView

pytestmark = pytest.mark.slow
SKILL = {1: 0.74, 2: 0.78, 3: 0.86}
TFIDF = "TF-IDF + logistic regression"


def _noisy_reviews(directory: Path) -> tuple[Path, dict[str, str]]:
    rng = np.random.default_rng(0)
    flip = {"positive": "negative", "negative": "positive"}
    rows = [
        (text, flip[label] if rng.random() < 0.25 else label)
        for text, label in review_rows(600, seed=7)
    ]
    return write_csv(directory / "noisy.csv", rows), dict(rows)


def _oracle(server: FakeOpenAI, truth: Mapping[str, str]) -> None:
    def answer(model_id: str, prompt: str) -> Mapping[str, float]:
        info = server.state.model_info(model_id)
        label = truth.get(prompt.strip())
        if info is None or label is None:
            return {"positive": 0.5, "negative": 0.5}
        draw = hashlib.sha256(f"{model_id}|{prompt}".encode()).digest()[0] / 256
        right = draw < SKILL.get(info.epoch or 1, 0.74)
        other = "negative" if label == "positive" else "positive"
        return {label if right else other: 0.9, other if right else label: 0.1}

    server.state.set_oracle(answer)


def _answer(output: str) -> str:
    """The answer's line: the fake's trials are labelled synthetic on the line before it."""
    lines = output.splitlines()
    assert lines[0].startswith("Synthetic: these trials ran on a test server"), lines[0]
    return lines[1]


def test_the_report_buys_a_clearly_better_hosted_model_only_when_it_is_worth_it(
    tmp_path: Path, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-verdict-hosted-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.base_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    openai_fake.state.job_duration = 0.2
    csv, truth = _noisy_reviews(tmp_path)
    _oracle(openai_fake, truth)
    path = openai_experiment(tmp_path, "hosted-verdict", 2, backend={"max_concurrency": 2})
    text = path.read_text().replace(str(tmp_path / "reviews.csv"), str(csv))
    path.write_text(text.replace("n_epochs: {type: int, low: 1, high: 3}", "n_epochs: 3"))
    (tmp_path / "space.yaml").write_text(
        "n_epochs: 3\nlearning_rate_multiplier: {type: float, low: 0.5, high: 2.0}\nbatch_size: 8\n"
    )
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 2

    rich = run_cli("report", str(path), "--out", str(tmp_path / "rich"), "--value-per-point", "100")
    assert rich.exit_code == 0, rich.output
    answer = _answer(rich.output)
    assert answer.startswith("Answer: Choose trial "), answer
    # The first figure is the chosen model's test accuracy; validation is named as what it was
    # chosen on.
    assert re.match(
        r"Answer: Choose trial \d+ \([^)]*\): [\d.]+% test accuracy \(chosen on", answer
    )
    assert "epoch 1 of 3" not in answer.split(":")[1]  # the 86% model, not an earlier epoch

    frugal = run_cli(
        "report", str(path), "--out", str(tmp_path / "frugal"), "--value-per-point", "0.0001"
    )
    assert frugal.exit_code == 0, frugal.output
    first = _answer(frugal.output)
    assert first.startswith(f"Answer: Don't fine-tune: {TFIDF}"), first
    assert re.search(r"[\d.]+% test accuracy \(chosen on [\d.]+% validation\)", first)


BASE = "gpt-4.1-nano-2025-04-14"


def test_a_base_model_scored_zero_shot_is_weighed_as_a_baseline_both_ways(
    tmp_path: Path, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness evaluate --model BASE` scores the base model zero-shot; the report then weighs
    it like any baseline (it said "not scored by the report" however often it was evaluated,
    so a study paid to fine-tune a model no better than the base model asked nicely). A base
    model as good as the tuned ones is the answer; a weak one is listed and not chosen."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-verdict-hosted-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.base_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    openai_fake.state.job_duration = 0.2
    csv, truth = _noisy_reviews(tmp_path)
    base_skill = {"value": 0.5}

    def answer(model_id: str, prompt: str) -> Mapping[str, float]:
        label = truth.get(prompt.strip())
        info = openai_fake.state.model_info(model_id)
        skill = base_skill["value"] if model_id == BASE else SKILL.get(info.epoch or 1, 0.74)
        if label is None or (info is None and model_id != BASE):
            return {"positive": 0.5, "negative": 0.5}
        draw = hashlib.sha256(f"{model_id}|{prompt}".encode()).digest()[0] / 256
        other = "negative" if label == "positive" else "positive"
        return {label if draw < skill else other: 0.9, other if draw < skill else label: 0.1}

    openai_fake.state.set_oracle(answer)
    path = openai_experiment(tmp_path, "hosted-base", 2, backend={"max_concurrency": 2})
    path.write_text(path.read_text().replace(str(tmp_path / "reviews.csv"), str(csv)))
    (tmp_path / "space.yaml").write_text(
        "n_epochs: 3\nlearning_rate_multiplier: {type: float, low: 0.5, high: 2.0}\nbatch_size: 8\n"
    )
    assert len(run_sweep(load_experiment(str(path)), RecordingView()).results) == 2
    name = f"{BASE} without fine-tuning"

    weak = run_cli("evaluate", str(path), "--model", BASE)
    assert weak.exit_code == 0, weak.output
    assert "validation accuracy 0." in weak.output
    report = run_cli("report", str(path), "--out", str(tmp_path / "w"), "--value-per-point", "100")
    assert report.exit_code == 0, report.output
    assert _answer(report.output).startswith("Answer: Choose trial "), report.output
    markdown = (tmp_path / "w" / "report.md").read_text()
    assert name in markdown and "not scored:" not in markdown

    base_skill["value"] = 0.97  # the base model, asked, is better than any tuned one
    strong = run_cli("evaluate", str(path), "--model", BASE)
    assert strong.exit_code == 0, strong.output
    report = run_cli("report", str(path), "--out", str(tmp_path / "s"), "--value-per-point", "100")
    assert report.exit_code == 0, report.output
    assert _answer(report.output).startswith(f"Answer: Don't fine-tune: {name}"), report.output
    # The MLflow UI sees the answer too: its evaluation run is tagged on the report's front.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    evaluated = client.search_runs(
        [client.get_experiment_by_name("hosted-base").experiment_id],
        filter_string="tags.`harness.kind` = 'evaluation'",
        order_by=["attributes.start_time DESC"],
    )
    assert [r.data.tags.get("harness.report_front") for r in evaluated] == ["true", "false"]
    year = run_cli(
        "report", str(path), "--out", str(tmp_path / "y"), "--monthly-requests", "100000"
    )  # weighed on a first year of requests at its own rate per example, it still wins
    assert _answer(year.output).startswith(f"Answer: Don't fine-tune: {name}"), year.output
    assert re.search(r"for \$[\d.]+ to score, \$[\d.]+ in its first year", year.output)

    # A trial's own model scored again is not a baseline: it would cost only its scoring.
    trials = json.loads(run_cli("trials", str(path), "--json").output)
    own = next(t["model_ref"] for t in trials if t["number"] == 0)
    assert run_cli("evaluate", str(path), "--model", own).exit_code == 0
    again = run_cli("report", str(path), "--out", str(tmp_path / "o"))
    page = html.unescape((tmp_path / "o" / "report.html").read_text())  # markdown escapes "_"
    assert f"{own} (evaluated)" not in page, again.output

    # Compared with another study on the same data, whose own MLflow experiment holds no
    # evaluation: the base model scored under this one is a baseline of the comparison too.
    other = tmp_path / "hosted-other.yaml"
    other.write_text(
        path.read_text()
        .replace("name: hosted-base", "name: hosted-other")
        .replace("n_trials: 2", "n_trials: 1")
    )
    assert run_sweep(load_experiment(str(other)), RecordingView()).results
    both = run_cli("compare", str(other), str(path), "--out", str(tmp_path / "c"))
    assert both.exit_code == 0, both.output
    assert _answer(both.output).startswith(f"Answer: Don't fine-tune: {name}"), both.output
    assert "not scored:" not in (tmp_path / "c" / "report.md").read_text()


def test_an_evaluation_a_later_one_replaced_is_no_longer_tagged_on_the_front(
    tmp_path: Path, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report tags the `harness evaluate` run of each baseline `harness.report_front`. Once
    the model was evaluated again, the later run is the baseline and the earlier one is not
    weighed at all; but it kept the `true` an earlier report gave it, so the MLflow UI showed
    two runs of one model on the front where the report showed one."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-verdict-hosted-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.base_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    openai_fake.state.job_duration = 0.2
    csv, truth = _noisy_reviews(tmp_path)

    def answer(model_id: str, prompt: str) -> Mapping[str, float]:
        label = truth.get(prompt.strip(), "positive")
        other = "negative" if label == "positive" else "positive"
        right = model_id == BASE or hashlib.sha256(prompt.encode()).digest()[0] < 180
        return {label if right else other: 0.9, other if right else label: 0.1}

    openai_fake.state.set_oracle(answer)
    path = openai_experiment(tmp_path, "again", 1, backend={"max_concurrency": 1})
    path.write_text(path.read_text().replace(str(tmp_path / "reviews.csv"), str(csv)))
    (tmp_path / "space.yaml").write_text(
        "n_epochs: 1\nlearning_rate_multiplier: 1.0\nbatch_size: 8\n"
    )
    assert run_sweep(load_experiment(str(path)), RecordingView()).results
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment_id = client.get_experiment_by_name("again").experiment_id
    for attempt in ("first", "second"):
        assert run_cli("evaluate", str(path), "--model", BASE).exit_code == 0
        report = run_cli("report", str(path), "--out", str(tmp_path / attempt))
        assert _answer(report.output).startswith(f"Answer: Don't fine-tune: {BASE}"), attempt
    runs = client.search_runs(
        [experiment_id],
        filter_string="tags.`harness.kind` = 'evaluation'",
        order_by=["attributes.start_time DESC"],
    )
    assert [r.data.tags.get("harness.report_front") for r in runs] == ["true", "false"]

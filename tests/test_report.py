"""The report on constructed studies with known answers: a real Optuna SQLite storage, a real
MLflow store with `predictions.csv` artifacts, and per-example correctness chosen so that the
front, the marginal figures, the significance verdicts and the recommendation are known.

The known study (200 test examples):

    trial  accuracy  cost   correct on test examples
    0      0.700     0.01   0..139
    1      0.900     0.02   0..179            (+20 points over 0: real)
    2      0.950     1.00   0..189            (+5 points over 1: 10 one way, p = 0.002, real)
    3      0.800     0.05   0..159            (dominated by 1)
    4      0.900     0.03   20..199           (A/A with 1: 20 each way; dominated by 1)
    5      0.955     4.00   0..187, 190..192  (+0.5 points over 2 for 4x the cost: noise)
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from harness.config import Experiment, load_experiment
from harness.data.prepare import prepare_experiment
from harness.errors import ConfigError
from harness.report.build import (
    ReportOptions,
    build_report,
    log_report,
    pareto_front,
    summary_lines,
    write_report,
)
from harness.report.front import comparer, knee_index, recommend
from harness.report.model import TrialRow
from harness.sweep.study import pareto_numbers
from harness.tracking.record import TrialRecord
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import review_rows, write_csv

N_TEST = 200
KNOWN: dict[int, tuple[float, list[range]]] = {
    0: (0.01, [range(0, 140)]),
    1: (0.02, [range(0, 180)]),
    2: (1.00, [range(0, 190)]),
    3: (0.05, [range(0, 160)]),
    4: (0.03, [range(20, 200)]),
    5: (4.00, [range(0, 188), range(190, 193)]),
}
DISTRIBUTIONS = {
    "n_epochs": IntDistribution(1, 3),
    "learning_rate_multiplier": FloatDistribution(0.5, 4.0, log=True),
    "batch_size": CategoricalDistribution([16, 32]),
}


@dataclass
class Constructed:
    experiment_path: Path
    parent_run_id: str | None
    run_ids: dict[int, str]
    tracking_uri: str

    def experiment(self) -> Experiment:
        return load_experiment(str(self.experiment_path))


def _write_experiment(directory: Path, name: str, tracking: bool) -> Path:
    rows = review_rows(500, seed=1)
    # Flip a quarter of the labels so the TF-IDF baseline is good but not perfect.
    rng = np.random.default_rng(0)
    flipped = [
        (
            text,
            {"positive": "negative", "negative": "positive"}[label]
            if rng.random() < 0.25
            else label,
        )
        for text, label in rows
    ]
    data = write_csv(directory / "reviews.csv", flipped)
    space = directory / "space.yaml"
    space.write_text(
        yaml.safe_dump({"n_epochs": 1, "learning_rate_multiplier": 1.0, "batch_size": 16})
    )
    config: dict[str, Any] = {
        "name": name,
        "dataset": {"source": str(data), "split": {"validation": 0.1, "test": 0.2}},
        "backend": {"kind": "local"},
        "search_space": str(space),
        "study": {"name": name, "storage": f"sqlite:///{directory / 'optuna.db'}"},
    }
    if tracking:
        config["tracking"] = {"uri": f"sqlite:///{directory / 'mlflow.db'}"}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _predictions(
    test_texts: tuple[str, ...], test_labels: tuple[str, ...], correct: np.ndarray
) -> pd.DataFrame:
    other = {"positive": "negative", "negative": "positive"}
    predicted = [t if ok else other[t] for t, ok in zip(test_labels, correct, strict=True)]
    confidence = np.where(correct, 0.9, 0.65)
    return pd.DataFrame(
        {
            "text": test_texts,
            "true": test_labels,
            "predicted": predicted,
            "confidence": confidence,
            "correct": correct,
        }
    )


def _correct(ranges: list[range]) -> np.ndarray:
    correct = np.zeros(N_TEST, dtype=bool)
    for r in ranges:
        correct[list(r)] = True
    return correct


def construct(
    directory: Path, name: str = "known", tracking: bool = True, running: int = 0
) -> Constructed:
    """A study with the KNOWN trials, their predictions logged to MLflow when `tracking`."""
    path = _write_experiment(directory, name, tracking)
    experiment = load_experiment(str(path))
    data, _ = prepare_experiment(experiment)
    assert len(data.test) == N_TEST
    study = optuna.create_study(
        study_name=name,
        storage=experiment.config.study.storage,
        directions=["maximize", "minimize"],
    )
    client, parent, uri = None, None, str(experiment.config.tracking.uri)
    if tracking:
        client = MlflowClient(tracking_uri=uri)
        exp_id = client.create_experiment(
            name, artifact_location=(directory / "artifacts").as_uri()
        )
        parent = client.create_run(exp_id, run_name=f"study {name}").info.run_id
        study.set_user_attr("mlflow_run_id", parent)
    run_ids: dict[int, str] = {}
    for number, (cost, ranges) in KNOWN.items():
        correct = _correct(ranges)
        attrs: dict[str, Any] = {
            "cost_usd": cost,
            "train_cost_usd": 0.9 * cost,
            "eval_cost_usd": 0.1 * cost,
            "compute_seconds": cost * 40_000,
            "wall_seconds": cost * 40_000,
            "test_accuracy": float(correct.mean()),
            "test_macro_f1": float(correct.mean()) - 0.01,
            "test_weighted_f1": float(correct.mean()) - 0.005,
            "test_mae": None,
            "model_ref": f"models/t{number}",
            "train_examples": None,
            "valid_accuracy_by_epoch": [0.80, 0.88, 0.87] if number == 1 else [0.7 + number / 100],
            "cost_usd_by_epoch": [0.006, 0.012, 0.018] if number == 1 else [0.9 * cost],
        }
        if client is not None:
            run = client.create_run(
                exp_id, run_name=f"t{number:03d}", tags={"mlflow.parentRunId": parent}
            )
            run_ids[number] = attrs["mlflow_run_id"] = run.info.run_id
            csv = directory / "predictions.csv"
            _predictions(data.test.texts, data.test.labels, correct).to_csv(csv, index=False)
            client.log_artifact(run.info.run_id, str(csv))
        params = {
            "n_epochs": 3 if number == 1 else 1,
            "learning_rate_multiplier": 1.0 + number / 4,
            "batch_size": 16,
        }
        study.add_trial(
            optuna.trial.create_trial(
                values=[float(correct.mean()), cost],
                params=params,
                distributions=DISTRIBUTIONS,
                user_attrs=attrs,
            )
        )
    for _ in range(running):
        study.ask()
    return Constructed(path, parent, run_ids, uri)


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Constructed:
    return construct(tmp_path_factory.mktemp("known"), running=1)


@pytest.fixture(scope="module")
def knee_report(known: Constructed) -> Any:
    return build_report(known.experiment(), ReportOptions())


def test_front_matches_optuna(known: Constructed, knee_report: Any) -> None:
    assert [t.number for t in knee_report.front] == [0, 1, 2, 5]
    study = optuna.load_study(study_name="known", storage=known.experiment().config.study.storage)
    assert {t.number for t in knee_report.front} == pareto_numbers(study)
    assert [t.number for t in knee_report.trials if not t.on_front] == [3, 4]


def test_pareto_front_keeps_ties_and_sorts_by_cost() -> None:
    points = [(0.9, 2.0), (0.8, 1.0), (0.9, 2.0), (0.7, 3.0), (0.95, 5.0)]
    assert pareto_front(points) == [1, 0, 2, 4]


def test_marginal_figures(knee_report: Any) -> None:
    steps = {(s.cheaper.number, s.dearer.number): s for s in knee_report.steps}
    assert list(steps) == [(0, 1), (1, 2), (2, 5)]
    first, second, last = steps[(0, 1)], steps[(1, 2)], steps[(2, 5)]
    assert first.gain_points == pytest.approx(20.0)
    assert first.cost_ratio == pytest.approx(2.0)
    assert first.dollars_per_point == pytest.approx(0.0005)
    assert second.gain_points == pytest.approx(5.0)
    assert second.cost_ratio == pytest.approx(50.0)
    assert second.dollars_per_point == pytest.approx(0.98 / 5)
    assert last.gain_points == pytest.approx(0.5)
    assert last.cost_ratio == pytest.approx(4.0)
    assert last.dollars_per_point == pytest.approx(6.0)


def test_significance_verdicts(knee_report: Any) -> None:
    steps = {(s.cheaper.number, s.dearer.number): s.comparison for s in knee_report.steps}
    assert steps[(0, 1)].significant and steps[(0, 1)].only_b == 40
    assert steps[(1, 2)].significant
    assert steps[(1, 2)].p_value == pytest.approx(2 * 0.5**10)
    # 4x the cost for +0.5 points: 3 examples one way, 2 the other.
    noise = steps[(2, 5)]
    assert not noise.significant and noise.p_value == pytest.approx(1.0)
    assert noise.examples_needed is not None and noise.examples_needed > 10 * N_TEST


def test_a_a_trial_is_not_significantly_different(knee_report: Any) -> None:
    rows = {t.number: t for t in knee_report.trials}
    result = comparer(ReportOptions())(rows[1], rows[4])
    assert result is not None
    assert (result.only_a, result.only_b) == (20, 20)
    assert not result.significant


def test_knee_without_value_or_budget(knee_report: Any) -> None:
    rec = knee_report.recommendation
    assert rec.mode == "knee"
    assert rec.chosen.number == 1
    assert rec.text.startswith("Choose trial 1 (3 epochs, learning rate x1.25, batch 16): 90.0%")
    assert "trial 2, adds +5.0 points for 50x the cost ($0.196 per point)" in rec.text
    assert knee_report.neighbour.number == 0


@pytest.mark.parametrize(
    ("value", "budget", "chosen", "phrase"),
    [
        (0.1, None, 1, "more than the $0.10 a point is worth to you"),
        (1.0, None, 2, "within noise for 200 test examples"),
        (100.0, None, 2, "within noise for 200 test examples (McNemar p = 1.00"),
        (None, 0.5, 1, "costs $1.00, over your $0.50 budget"),
        (None, 5.0, 2, "within noise"),
        (1.0, 0.5, 1, "over your $0.50 budget"),
    ],
)
def test_recommendation_for_given_values(
    known: Constructed, value: float | None, budget: float | None, chosen: int, phrase: str
) -> None:
    report = build_report(known.experiment(), ReportOptions(value_per_point=value, budget=budget))
    assert report.recommendation.chosen.number == chosen
    assert phrase in report.recommendation.text
    # Two sentences a manager can read.
    assert report.recommendation.text.count(". ") == 1


def test_nothing_fits_a_tiny_budget(known: Constructed) -> None:
    report = build_report(known.experiment(), ReportOptions(budget=0.005))
    assert report.recommendation.chosen.number == 0
    assert report.recommendation.text.startswith("No configuration fits the $0.005 budget")


def test_baselines_and_gain_over_the_best(known: Constructed, knee_report: Any) -> None:
    data, _ = prepare_experiment(known.experiment())
    majority = Counter(data.train.labels).most_common(1)[0][0]
    by_name = {b.name: b for b in knee_report.baselines}
    assert by_name["majority class"].accuracy == pytest.approx(
        data.test.labels.count(majority) / N_TEST
    )
    tfidf = by_name["TF-IDF + logistic regression"]
    assert tfidf.accuracy is not None and 0.55 < tfidf.accuracy < 0.9
    assert "harness evaluate --model BASE" in by_name["all-MiniLM-L6-v2 without fine-tuning"].note
    assert knee_report.best_baseline is tfidf
    vs_base = knee_report.baseline_comparisons
    assert set(vs_base) == set(KNOWN)
    assert vs_base[2].difference == pytest.approx(0.95 - tfidf.accuracy)


def test_ownership_epochs_and_sample(knee_report: Any) -> None:
    own = {o.number: o for o in knee_report.ownership}
    # Local backend: inference per request = eval cost / test examples.
    assert own[1].per_request == pytest.approx(0.002 / N_TEST)
    assert own[1].monthly == pytest.approx(0.002 / N_TEST * 10_000)
    assert own[1].months(12) == pytest.approx(0.018 + 12 * 0.1)
    epochs = {e.number: e for e in knee_report.epochs}
    assert (epochs[1].peak_epoch, epochs[1].epochs) == (2, 3)
    assert epochs[1].cost_after_peak == pytest.approx(0.006)
    sample = knee_report.sample
    assert 0 < len(sample) <= ReportOptions().sample_size
    wrong = (sample["chosen"] != sample["true"]) | (sample["neighbour"] != sample["true"])
    assert wrong.all()


def test_running_trials_are_mentioned(knee_report: Any) -> None:
    assert knee_report.running == 1
    assert "1 still running" in " ".join(summary_lines(knee_report))


def test_written_report_answers_first_and_is_self_contained(
    known: Constructed, tmp_path: Path
) -> None:
    report = build_report(known.experiment(), ReportOptions(value_per_point=100.0))
    paths = write_report(report, tmp_path / "out")
    assert {p.name for p in paths.values()} >= {"report.md", "report.html", "accuracy_vs_cost.png"}
    lines = [line for line in paths["markdown"].read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# known:")
    assert lines[1].startswith("**Answer:** Choose trial 2")
    assert "+0.5 points for 4.0x the cost ($6.00 per point)" in lines[1]
    assert "within noise" in lines[1]
    page = paths["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script src" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page  # not even an SVG namespace
    assert page.count("<title>") >= len(KNOWN)  # one tooltip per trial, plus the page title
    assert "data:image/png;base64," in page
    assert paths["chart"].read_bytes().startswith(b"\x89PNG")


def test_logged_on_parent_run_and_tags(known: Constructed, tmp_path: Path) -> None:
    report = build_report(known.experiment(), ReportOptions())
    paths = write_report(report, tmp_path / "out")
    assert log_report(report, paths) == []
    client = MlflowClient(tracking_uri=known.tracking_uri)
    logged = {Path(a.path).name for a in client.list_artifacts(known.parent_run_id, "report")}
    assert {"report.md", "report.html", "accuracy_vs_cost.png", "epoch_curves.png"} <= logged
    tags = {
        n: client.get_run(run_id).data.tags.get("pareto") for n, run_id in known.run_ids.items()
    }
    assert tags == {0: "true", 1: "true", 2: "true", 3: "false", 4: "false", 5: "true"}


def test_cli_report(known: Constructed, tmp_path: Path) -> None:
    out = tmp_path / "cli-out"
    result = run_cli(
        "report", str(known.experiment_path), "--out", str(out), "--value-per-point", "1"
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Answer: Choose trial 2")
    assert "trial 2 -> trial 5: +0.5 points for 4.0x the cost ($6.00 per point)" in result.output
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_cli_default_out_dir(known: Constructed, isolated: Path) -> None:
    result = run_cli("report", str(known.experiment_path), "--budget", "0.5")
    assert result.exit_code == 0, result.output
    assert (isolated / "mlruns" / "reports" / "known" / "report.md").is_file()


def test_cli_rejects_bad_options(known: Constructed) -> None:
    result = run_cli("report", str(known.experiment_path), "--budget", "-1")
    assert_clean_error(result, "--budget must be positive")
    assert result.exit_code == 2


def test_empty_study_is_a_clear_error(tmp_path: Path) -> None:
    path = _write_experiment(tmp_path, "empty", tracking=False)
    experiment = load_experiment(str(path))
    optuna.create_study(
        study_name="empty",
        storage=experiment.config.study.storage,
        directions=["maximize", "minimize"],
    )
    with pytest.raises(ConfigError, match="no completed trials yet"):
        build_report(experiment)
    result = run_cli("report", str(path))
    assert_clean_error(result, "no completed trials yet", "harness sweep")
    assert result.exit_code == 2


def test_without_predictions_the_report_says_so(tmp_path: Path) -> None:
    constructed = construct(tmp_path, name="untracked", tracking=False)
    report = build_report(constructed.experiment(), ReportOptions(value_per_point=100.0))
    assert [t.number for t in report.front] == [0, 1, 2, 5]
    assert all(s.comparison is None for s in report.steps)
    # Without paired tests the point estimate decides: +0.5 points is worth $3 at $100 a point.
    assert report.recommendation.chosen.number == 5
    assert report.recommendation.text.endswith(
        "It is the most accurate configuration found, and the dearest."
    )
    assert any("predictions.csv" in note for note in report.notes)
    assert log_report(report, write_report(report, tmp_path / "out"))[0].startswith("not logged")


def _row(number: int, cost: float, n_correct: int, n: int = N_TEST) -> TrialRow:
    correct = np.arange(n) < n_correct
    frame = pd.DataFrame(
        {
            "text": [f"example {i}" for i in range(n)],
            "true": "a",
            "predicted": np.where(correct, "a", "b"),
            "confidence": 0.9,
        }
    )
    record = TrialRecord()
    return TrialRow(
        number, {"n_epochs": 1}, n_correct / n, cost, record, None, frame, on_front=True
    )


def test_knee_is_not_bought_with_noise() -> None:
    # Trial 1 is the geometric knee, but its +1 point over trial 0 is 2 examples: noise.
    front = [_row(0, 0.010, 150), _row(1, 0.011, 152), _row(2, 1.0, 154)]
    assert knee_index([r.cost for r in front], [r.accuracy for r in front]) == 1
    options = ReportOptions()
    rec = recommend(front, options, comparer(options), N_TEST)
    assert rec.chosen.number == 0
    assert "trial 1, adds +1.0 points for 1.1x the cost" in rec.text
    assert "within noise for 200 test examples (McNemar p = 0.50" in rec.text

"""A model `harness evaluate` scored, as the report weighs it: recorded in a real MLflow store
(`log_evaluation`), read back as a baseline (`evaluated_baselines`), and priced over a first
year of requests (`_weigh_serving`) as a trial of the same backend would be."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import load_experiment
from harness.data.prepare import prepare_experiment
from harness.records import Cost, Prediction
from harness.report.baselines import evaluated_baselines
from harness.report.build import _weigh_serving, baseline_rows
from harness.report.sections import HOURS_PER_MONTH
from harness.scoring import score
from harness.sweep.evaluation import ModelEvaluation, log_evaluation
from tests.conftest import openai_experiment

TUNED = "gpt-4.1-nano-2025-04-14.ft-0123456789abcdef"  # an Azure fine-tuned model


def test_an_evaluated_model_on_an_hourly_deployment_weighs_its_hosting_by_the_month(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring a fine-tuned model on an Azure Standard deployment paid an hour of hosting for
    32 examples. Served for a year it bills that hour 8,760 times whatever the volume; the
    report spread the scoring's one hour over its 32 examples as a price per request instead,
    so at 1,000 requests a month its year cost about $640, not the $15,000 a trial of the same
    model is weighed at: an evaluated model looked far cheaper than the same model tuned here."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = load_experiment(str(openai_experiment(tmp_path, "evaluated", 1)))
    data, _ = prepare_experiment(experiment)
    predictions = tuple(Prediction(label, 0.9) for label in data.test.labels)
    tokens_usd, hosting_usd, hours = 0.0032, 1.7, 1.0
    result = ModelEvaluation(
        model=TUNED,
        backend="openai",
        metrics=score(data.test.labels, list(data.test.labels), data.labels, data.ordinal),
        cost=Cost(
            usd=tokens_usd + hosting_usd,
            inference_tokens=3200,
            hosting_usd=hosting_usd,
            hosting_hours=hours,
        ),
        predictions=predictions,
        synthetic=True,
        wall_seconds=1.0,
        valid_correct=tuple(True for _ in data.validation.labels),
    )
    log_evaluation(experiment, data, result)

    [baseline] = evaluated_baselines(experiment, data)
    n = len(data.validation) + len(data.test)
    assert baseline.cost == pytest.approx(tokens_usd + hosting_usd)  # what scoring it paid
    assert baseline.per_request == pytest.approx(tokens_usd / n)  # tokens only
    assert baseline.hosting_per_hour == pytest.approx(hosting_usd / hours)

    [row] = baseline_rows([baseline])
    _weigh_serving([row], 1000)
    year = tokens_usd + hosting_usd + 12 * (1000 * tokens_usd / n + 1.7 * HOURS_PER_MONTH)
    assert row.decision_cost == pytest.approx(year)
    _weigh_serving([row], 0)  # no requests: the deployment bills its hours all the same
    assert row.decision_cost == pytest.approx(tokens_usd + hosting_usd + 12 * 1.7 * HOURS_PER_MONTH)


def test_an_evaluated_model_billed_per_token_has_no_hosting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base model on OpenAI bills per token only: its year is scoring plus requests."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = load_experiment(str(openai_experiment(tmp_path, "per-token", 1)))
    data, _ = prepare_experiment(experiment)
    result = ModelEvaluation(
        model="gpt-4.1-nano-2025-04-14",
        backend="openai",
        metrics=score(data.test.labels, list(data.test.labels), data.labels, data.ordinal),
        cost=Cost(usd=0.0032, inference_tokens=3200),
        predictions=tuple(Prediction(label, 0.9) for label in data.test.labels),
        synthetic=True,
        wall_seconds=1.0,
        zero_shot=True,
        valid_correct=tuple(True for _ in data.validation.labels),
    )
    log_evaluation(experiment, data, result)
    [baseline] = evaluated_baselines(experiment, data)
    assert baseline.hosting_per_hour is None
    [row] = baseline_rows([baseline])
    _weigh_serving([row], 1000)
    n = len(data.validation) + len(data.test)
    assert row.decision_cost == pytest.approx(0.0032 + 12 * 1000 * 0.0032 / n)


def test_a_zero_shot_score_counts_only_for_a_study_prompted_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by QA: SmolLM2 scored zero-shot in the completion format (text + "###") was
    weighed, as "SmolLM2-135M-Instruct without fine-tuning", by the report of a study of the
    same data in the chat format, whose models are prompted otherwise; and a later evaluation
    in the other format silently replaced it in both studies' reports."""
    import yaml

    from tests.conftest import review_rows, write_csv

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    csv = write_csv(tmp_path / "reviews.csv", review_rows(40, seed=4))
    config = {
        "name": "lm",
        "dataset": {"source": str(csv), "split": {"validation": 0.2, "test": 0.2}},
        "backend": {"kind": "local_lm", "format": "completion"},
        "search_space": {"n_epochs": 1, "learning_rate_multiplier": 1.0, "batch_size": 8},
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    completion = load_experiment(str(path))
    data, _ = prepare_experiment(completion)

    def evaluated(experiment: object, right: bool) -> None:
        labels = [label if right else "x" for label in data.test.labels]
        log_evaluation(
            experiment,  # type: ignore[arg-type]
            data,
            ModelEvaluation(
                model="SmolLM2-135M-Instruct",
                backend="local_lm",
                metrics=score(data.test.labels, labels, data.labels, data.ordinal),
                cost=Cost(usd=0.0002, inference_tokens=3000),
                predictions=tuple(Prediction(label, 0.9) for label in labels),
                synthetic=False,
                wall_seconds=1.0,
                zero_shot=True,
                valid_correct=tuple(right for _ in data.validation.labels),
            ),
        )

    evaluated(completion, right=True)
    config["backend"]["format"] = "chat"  # type: ignore[index]
    path.write_text(yaml.safe_dump(config))
    chat = load_experiment(str(path))
    assert evaluated_baselines(chat, data) == []  # not scored the way this study prompts
    evaluated(chat, right=False)  # now it is: the chat study weighs its own score
    [weighed] = evaluated_baselines(chat, data)
    assert weighed.valid_accuracy == 0.0
    [kept] = evaluated_baselines(completion, data)  # and the completion study keeps its own
    assert kept.valid_accuracy == 1.0

    # Compared, each study's zero-shot score is weighed under a name of its own: both were
    # "SmolLM2-135M-Instruct without fine-tuning" and only the first study's counted.
    from harness.report.baselines import compute_baselines

    config["study"] = {"name": "lm-chat"}
    path.write_text(yaml.safe_dump(config))
    chat = load_experiment(str(path))
    baselines, _ = compute_baselines(completion, None, [], sources=[chat])
    zero_shot = {b.name: b.valid_accuracy for b in baselines if "without fine-tuning" in b.name}
    assert zero_shot == {
        "SmolLM2-135M-Instruct without fine-tuning": 1.0,
        "SmolLM2-135M-Instruct without fine-tuning (scored for lm-chat)": 0.0,
    }
    config["backend"]["format"] = "completion"  # type: ignore[index]
    config["study"] = {"name": "lm-2"}
    path.write_text(yaml.safe_dump(config))
    again, _ = compute_baselines(completion, None, [], sources=[load_experiment(str(path))])
    assert len(again) == len(baselines) - 1  # one run found through two studies counts once

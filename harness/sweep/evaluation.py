"""Evaluate a model without training it: `harness evaluate`.

The base model zero-shot (the baseline every fine-tune must beat) or an existing fine-tuned model
id is scored on the experiment's validation and test sets through the same path a trial's model
takes, and the result is logged as its own MLflow run (tag `harness.kind=evaluation`) beside the
study's runs, with which examples it got right on each (`harness.valid_correct`,
`harness.test_correct`): `harness report` weighs such a model as a baseline, compared paired on
validation like any trial (`harness.report.baselines.evaluated_baselines`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.backends import load_backend
from harness.backends.base import Backend
from harness.backends.hosted.pricing import base_model_of, is_fine_tuned
from harness.config import Experiment
from harness.errors import ConfigError, HarnessError
from harness.locations import redact_text
from harness.records import Cost, Metrics, Prediction, PreparedData, TrialSpec, usd
from harness.scoring import pack_bits, score
from harness.tracking.record import (
    DATA_DIGEST_TAG,
    FAILURE_REASON_TAG,
    SYNTHETIC_TAG,
    hosting_metrics,
    test_metrics,
)

EVALUATION_TAG = "harness.kind"
MODEL_TAG = "harness.model"
ZERO_SHOT_TAG = "zero_shot"
VALID_CORRECT_TAG = "harness.valid_correct"  # packed bits (`harness.scoring.pack_bits`)
TEST_CORRECT_TAG = "harness.test_correct"
PROMPT_TAG = "harness.prompt"  # the settings that shape what the model is asked (`prompt_of`)
# A zero-shot answer depends on how the text is put to the model: the prompt format, the system
# message and where the text is cut. A score under other settings is another model's score.
PROMPT_SETTINGS = ("format", "system_prompt", "max_length")


@dataclass(frozen=True)
class ModelEvaluation:
    """A model's test-set scores, what the evaluation cost, and how many answers missed."""

    model: str
    backend: str
    metrics: Metrics
    cost: Cost
    predictions: tuple[Prediction, ...]
    synthetic: bool
    wall_seconds: float
    zero_shot: bool = False  # the untuned base model, as the backend knows its models
    run_id: str | None = None
    # Which validation examples it got right (the report compares on validation, paired).
    valid_correct: tuple[bool, ...] = ()
    unrecorded: str | None = None  # why no run was logged: the tracking server did not answer

    @property
    def valid_accuracy(self) -> float | None:
        """Accuracy on the validation set (None: the experiment has none)."""
        right = self.valid_correct
        return sum(right) / len(right) if right else None


def evaluate_model(
    experiment: Experiment,
    model: str,
    track: bool = True,
    announce: Callable[[str], None] | None = None,
) -> ModelEvaluation:
    """Score `model` on the experiment's test set and (by default) log it to MLflow.

    `announce` receives, before the first request, what scoring may cost at most
    (`spending_line`): a user hears the price before paying it, as from `harness estimate`.

    Raises:
        ConfigError: Bad config, the API key is missing, or `model` is a base model the
            backend cannot score untuned (`Capabilities.scores_base_model`).
        BackendError: The model cannot be called (after retries).
    """
    from harness.data.prepare import prepare_experiment

    model = as_recorded(model)
    backend = load_backend(experiment.config.backend)
    zero_shot = backend.is_base_model(model)
    if zero_shot and not backend.capabilities.scores_base_model:
        # The backend knows only that it is no model of its own (a base model, a mistyped
        # path, another provider's id): say that, not which of them it is.
        raise ConfigError(
            f"{model} is no model a trial made (a base model, or no folder a trial wrote), and "
            f"the {backend.kind} backend cannot score a base model untuned (an encoder's "
            "classification head is random before fine-tuning); name a model a trial made: "
            "`harness trials EXPERIMENT --json` lists each trial's model_ref"
        )
    if zero_shot and backend.capabilities.bills_jobs:  # priced once every answer is paid for:
        for row in backend.price_rows([model]):  # a rate missing then is refused now, for free
            row.inference_usd(0, 0, fine_tuned=False)
    data, _ = prepare_experiment(experiment)
    # The key set and accepted, the endpoint answering: checked before the price is said, which
    # would otherwise read as if scoring had begun. No models: nothing of a sweep's is checked.
    backend.preflight(data, [])
    _hosting_of_study(backend, experiment.study_name)
    if announce is not None:
        announce(spending_line(backend, experiment, data, model, zero_shot))
    started = time.perf_counter()
    try:  # One call for both sets: the validation answers are what the report compares it on.
        listed, cost = backend.predict(model, data.validation.texts + data.test.texts, data.labels)
    except KeyboardInterrupt as exc:  # Ctrl-C or a signal: what was paid so far is recorded
        try:
            _record_cut_short(experiment, data, backend, model, zero_shot, exc, track)
        except Exception as problem:  # the interrupt is what the user gets, never a traceback
            exc.add_note(f"what scoring had paid was not recorded ({redact_text(str(problem))})")
        raise
    n_valid = len(data.validation)
    predictions = tuple(listed[n_valid:])
    valid = zip(data.validation.labels, listed[:n_valid], strict=True)
    metrics = score(data.test.labels, [p.label for p in predictions], data.labels, data.ordinal)
    result = ModelEvaluation(
        model=model,
        backend=backend.kind,
        metrics=metrics,
        cost=cost,
        predictions=predictions,
        synthetic=backend.capabilities.synthetic,
        wall_seconds=time.perf_counter() - started,
        zero_shot=zero_shot,
        valid_correct=tuple(truth == p.label for truth, p in valid),
    )
    if not track:
        return result
    try:
        run_id = log_evaluation(experiment, data, result)
    except Exception as exc:  # paid for: the scores are shown all the same, and why unkept
        from harness.tracking.store import server_unreachable

        outage = server_unreachable(exc)
        if outage is None:
            raise
        return replace(result, unrecorded=outage)
    return replace(result, run_id=run_id)


def prompt_of(experiment: Experiment) -> str:
    """The experiment's backend settings that shape a prompt (`PROMPT_SETTINGS`, those it has),
    as the `harness.prompt` tag an evaluation carries and a report matches."""
    backend = experiment.config.backend
    fields = type(backend).model_fields
    return json.dumps({k: getattr(backend, k) for k in PROMPT_SETTINGS if k in fields})


def as_recorded(model: str) -> str:
    """A model folder on this machine by its absolute path, as a trial records its own model's:
    the report then knows a trial's model evaluated again (no baseline) however it was named,
    and two evaluations of one folder as one model. Any other reference as given."""
    folder = Path(model).expanduser()
    return str(folder.resolve()) if folder.is_dir() else model


def spending_line(
    backend: Backend, experiment: Experiment, data: PreparedData, model: str, zero_shot: bool
) -> str:
    """What scoring `model` once on validation and test may cost at most: the backend's own
    estimate of one epoch point's scoring (`Backend.estimate`, as `harness estimate` prices a
    trial's), at fine-tuned rates (never below a base model's), with the hours a deployment
    billed by the hour is reserved for. A local backend runs on this machine: no provider
    bills it, and no estimate is asked. Not a trial: drawn from no study's budget ledger."""
    n_valid, n_test = len(data.validation), len(data.test)
    examples = (
        f"Scoring {model} on {n_valid + n_test} examples ({n_valid} validation, {n_test} test)"
    )
    if not backend.capabilities.bills_jobs:  # no provider bills it (nor prices no training)
        return f"{examples} on this machine: its compute is priced, no provider bills it"
    base = model if zero_shot else experiment.config.backend.model
    if is_fine_tuned(model):  # an OpenAI or Azure name says its base model
        base = base_model_of(model)
    spec = TrialSpec(0, 1, 1.0, 1, base, train_examples=0, study=experiment.study_name)
    try:
        bound = backend.estimate(spec, data).evaluation
    except HarnessError as exc:  # priced as a trial's scoring; the scoring itself may still go
        return f"{examples}: not priced beforehand ({exc}); not drawn from the study's budget"
    if zero_shot:  # a base model is called as it is served (per token): nothing is deployed
        bound = Cost(usd=bound.usd - bound.hosting_usd)
    hosting = (
        f", {usd(bound.hosting_usd)} of it hosting a deployment billed by the hour"
        if bound.hosting_usd
        else ""
    )
    return (
        f"{examples}: at most {usd(bound.usd)}{hosting}; not drawn from the study's budget "
        "(`budget_usd` bounds the sweep's trials)"
    )


def _hosting_of_study(backend: Backend, study: str) -> None:
    """A deployment made to score the model (Azure) carries the experiment's study, as a trial's
    does: if this process is killed before deleting it, the study's next `harness sweep` finds
    it among the study's deployments no trial holds and deletes it (tagged with no study, no
    clean-up would ever find it, and it would bill by the hour for good)."""
    from harness.backends.openai._azure import AzureDeployments

    deployments = getattr(backend, "deployments", None)
    if isinstance(deployments, AzureDeployments):
        deployments.study = study


def log_evaluation(experiment: Experiment, data: PreparedData, result: ModelEvaluation) -> str:
    """One MLflow run for the evaluation: params, metrics, tags and the predictions table."""
    test_right = [t == p.label for t, p in zip(data.test.labels, result.predictions, strict=True)]
    tags = {
        ZERO_SHOT_TAG: str(result.zero_shot).lower(),
        SYNTHETIC_TAG: str(result.synthetic).lower(),
        VALID_CORRECT_TAG: pack_bits(result.valid_correct),
        TEST_CORRECT_TAG: pack_bits(test_right),
    }
    client, run_id = _open_run(experiment, data, result.model, result.backend, tags)
    _log_metrics(client, run_id, _metrics(result))
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run_id, str(_predictions_csv(data, result, Path(tmp))))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _open_run(
    experiment: Experiment, data: PreparedData, model: str, backend: str, tags: dict[str, str]
) -> tuple[Any, str]:
    """An evaluation's MLflow run, opened with its tags, params and config: (client, run id)."""
    from mlflow.entities import Param

    from harness.tracking.runs import MlflowTracker, redact

    tracker = MlflowTracker(experiment, data, None)
    tags = {
        EVALUATION_TAG: "evaluation",
        MODEL_TAG: model,
        DATA_DIGEST_TAG: data.digest,
        PROMPT_TAG: prompt_of(experiment),
        **tags,
    }
    run = tracker.client.create_run(tracker.experiment_id, tags=tags, run_name=f"evaluate {model}")
    run_id: str = run.info.run_id
    params = {
        "model": model,
        "backend": backend,
        "validation_examples": len(data.validation),
        "test_examples": len(data.test),
    }
    tracker.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    tracker.client.log_dict(run_id, redact(experiment.raw), "config.yaml")
    return tracker.client, run_id


def _log_metrics(client: Any, run_id: str, metrics: dict[str, float | None]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    found = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    client.log_batch(run_id, metrics=found)


def _record_cut_short(
    experiment: Experiment,
    data: PreparedData,
    backend: Backend,
    model: str,
    zero_shot: bool,
    exc: KeyboardInterrupt,
    track: bool,
) -> None:
    """Scoring on a hosted backend interrupted: what its answers so far cost is logged as a
    KILLED evaluation run (no accuracy: a report never weighs it) and noted on `exc`, which the
    CLI's interrupt line says. A local backend bills no one: nothing to record."""
    from harness.backends.openai._azure import AzureDeployments

    evaluator = getattr(backend, "evaluator", None)  # the hosted backends' scorer
    if not backend.capabilities.bills_jobs or evaluator is None:
        return
    paid: Cost = evaluator.paid()
    deployments, prices = getattr(backend, "deployments", None), getattr(backend, "prices", None)
    if isinstance(deployments, AzureDeployments) and prices is not None:  # its started hour
        paid += deployments.hosting_billed(prices)
    hosting = f", {paid.hosting_hours:g} h of hosting" if paid.hosting_hours else ""
    said = f"scoring {model} had paid {usd(paid.usd)} ({paid.inference_tokens:,} tokens{hosting})"
    if track:
        tags = {ZERO_SHOT_TAG: str(zero_shot).lower(), FAILURE_REASON_TAG: "interrupted"}
        tags[SYNTHETIC_TAG] = str(backend.capabilities.synthetic).lower()
        client, run_id = _open_run(experiment, data, model, backend.kind, tags)
        _log_metrics(client, run_id, _paid_metrics(paid))
        client.set_terminated(run_id, "KILLED")
        said += f", recorded in MLflow run {run_id} (KILLED)"
    exc.add_note(said)


def _paid_metrics(cost: Cost) -> dict[str, float | None]:
    return {
        "eval_cost_usd": cost.usd,
        **hosting_metrics(cost),
        "inference_tokens": float(cost.inference_tokens),
    }


def _metrics(result: ModelEvaluation) -> dict[str, float | None]:
    return {
        **test_metrics(result.metrics),
        "valid_accuracy": result.valid_accuracy,
        **_paid_metrics(result.cost),
        "wall_seconds": result.wall_seconds,
    }


def _predictions_csv(data: PreparedData, result: ModelEvaluation, out: Path) -> Path:
    from harness.tracking.artifacts import PREDICTIONS, predictions_csv

    path = out / PREDICTIONS
    path.write_text(predictions_csv(data, result.predictions), encoding="utf-8")
    return path

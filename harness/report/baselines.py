"""Baselines on the trials' own test set: what accuracy costs without fine-tuning.

A fine-tuned model is worth its price only if it beats what is nearly free: predicting the most
frequent training label, and a TF-IDF + logistic-regression model trained on the same training
split in seconds on a CPU. Both are scored on the validation split (they take part in the front
and the walk like any trial) and on the test split. The base model without fine-tuning is a
third baseline once `harness evaluate` has scored it zero-shot (where the backend can), and a
fine-tuned model made elsewhere that it scored is one more.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from harness.config import Experiment
from harness.errors import HarnessError
from harness.records import PreparedData
from harness.scoring import score, unpack_correct
from harness.tracking.record import DATA_DIGEST_TAG, SYNTHETIC_TAG


@dataclass(frozen=True)
class Baseline:
    """A model scored on the same validation and test examples as the trials (accuracy None: not
    available); `correct` is per test example, `valid_correct` per validation example."""

    name: str
    accuracy: float | None
    macro_f1: float | None
    cost: float | None
    note: str
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)
    valid_accuracy: float | None = None
    valid_correct: np.ndarray | None = field(default=None, repr=False, compare=False)
    synthetic: bool = False  # scored on a test server: plumbing, never a result
    # What one request costs once it serves (a hosted model billed per token); None: next to
    # nothing (the majority class, TF-IDF on the machine already running).
    per_request: float | None = None
    # What hosting it bills an hour whether or not it is called (its scoring paid a deployment
    # by the hour: Azure Standard, a Together dedicated endpoint); None: billed per token only.
    hosting_per_hour: float | None = None
    # A fine-tuned model (made elsewhere, `harness evaluate` scored it): one of perhaps several
    # scored, so its validation accuracy is corrected for selection like a trial's.
    tuned: bool = False
    run_id: str | None = None  # the MLflow run that scored it (`harness evaluate`), if any

    @property
    def candidate(self) -> bool:
        """Scored with a known cost: a candidate of the front, as a trial is."""
        return self.accuracy is not None and self.cost is not None

    @property
    def selection_accuracy(self) -> float:
        """Validation accuracy where known, else test accuracy (0 when not scored)."""
        value = self.valid_accuracy if self.valid_accuracy is not None else self.accuracy
        return float(value or 0.0)


def majority_baseline(data: PreparedData) -> Baseline:
    """Always answer the most frequent training label (ties: the first in the label set)."""
    label = data.majority_label()
    predicted = [label] * len(data.test)
    metrics = score(data.test.labels, predicted, data.labels, data.ordinal)
    correct = np.asarray([t == label for t in data.test.labels], dtype=bool)
    right = np.asarray([t == label for t in data.validation.labels], dtype=bool)
    valid = float(right.mean()) if right.size else None
    note = f"always {label!r}, the most frequent training label"
    return Baseline(
        "majority class", metrics.accuracy, metrics.macro_f1, 0.0, note, correct, valid, right
    )


@contextlib.contextmanager
def _no_garbage_collection() -> Iterator[None]:
    """Python's cyclic collector paused, as `timeit` pauses it: a full collection walks every
    object the process holds, and whether one falls inside the timed span is the process's
    history, not the baseline's work (one in a 17-trial report cost 0.15 s: 0.28 CPU seconds
    against 0.13 for the same data beside one trial)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def tfidf_baseline(data: PreparedData, dollars_per_hour: float) -> Baseline:
    """TF-IDF word uni- and bigrams + logistic regression, trained on the training split only.

    Its cost is the CPU time of fitting it and scoring both splits, at the backend's $/hour: CPU
    seconds, like the local backend's calibrated rates, are the work done, which other processes
    on the machine do not inflate (wall-clock seconds moved 10x with the machine's load). On one
    thread: BLAS and OpenMP worker threads spin while they wait for a core, so with several the
    process's CPU seconds grew 2.5x beside two busy loops. And this thread's CPU seconds only,
    with the garbage collector paused (`_no_garbage_collection`): the process's count every
    thread's work (14x beside a busy thread of the same process).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), _no_garbage_collection():
        started = time.thread_time()
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            LogisticRegression(max_iter=2000),
        )
        model.fit(list(data.train.texts), list(data.train.labels))
        predicted = [str(p) for p in model.predict(list(data.test.texts))]
        valid_texts = list(data.validation.texts)
        guessed = [str(p) for p in model.predict(valid_texts)] if data.validation else []
        seconds = time.thread_time() - started
    metrics = score(data.test.labels, predicted, data.labels, data.ordinal)
    correct = np.asarray([t == p for t, p in zip(data.test.labels, predicted, strict=True)])
    right = np.asarray([t == p for t, p in zip(data.validation.labels, guessed, strict=True)])
    valid = float(right.mean()) if right.size else None
    note = f"scikit-learn, {seconds:.2f} CPU seconds to train and score"
    cost = seconds / 3600.0 * dollars_per_hour
    name = "TF-IDF + logistic regression"
    return Baseline(name, metrics.accuracy, metrics.macro_f1, cost, note, correct, valid, right)


def base_model_baseline(experiment: Experiment) -> Baseline:
    """The base model without fine-tuning, until `harness evaluate --model BASE` has scored it
    (the report never spends money; `evaluated_baselines` then takes its place).

    Only where the backend can call an untuned model (`Capabilities.scores_base_model`); an
    encoder's untrained head is random, so there it says nothing about the base model.
    """
    name = f"{experiment.config.backend.model} without fine-tuning"
    if experiment.config.backend.kind == "local":  # by kind: its class would import torch here
        note = "not scored: an encoder's classification head is random before fine-tuning"
        return Baseline(name, None, None, None, note)
    note = (
        "not scored: where the backend can call its base model untuned (hosted backends, the "
        "local LM), `harness evaluate EXPERIMENT --model BASE` scores it zero-shot and the "
        "report then weighs it like any baseline"
    )
    return Baseline(name, None, None, None, note)


def evaluated_baselines(
    experiment: Experiment, data: PreparedData, own: frozenset[str] = frozenset()
) -> list[Baseline]:
    """Models `harness evaluate` scored on this very data (same digest, same backend kind, same
    prompt settings: `harness.sweep.evaluation.prompt_of`), the latest run per model: the base
    model zero-shot, or a fine-tuned model made elsewhere.

    Either is a way not to pay for this study's fine-tuning, so it joins the front and the walk
    as a baseline, compared paired on validation; its cost is what scoring it cost (a model
    made elsewhere was paid for already). A run without validation answers (recorded before
    they were kept) or for other examples is left out, and so is a model of `own` (the trials'
    models: scored again, one would look as cheap as scoring it, its training forgotten).
    """
    from harness.sweep.evaluation import (
        EVALUATION_TAG,
        MODEL_TAG,
        PROMPT_TAG,
        as_recorded,
        prompt_of,
    )
    from harness.tracking.store import open_store, tracking_uri

    client = open_store(tracking_uri(experiment))
    name = experiment.config.tracking.experiment_name or experiment.name
    found = client.get_experiment_by_name(name) if client is not None else None
    if client is None or found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=(
            f"tags.`{EVALUATION_TAG}` = 'evaluation' and attributes.status = 'FINISHED' "
            f"and tags.`{DATA_DIGEST_TAG}` = '{data.digest}'"
        ),
        order_by=["attributes.start_time DESC"],
    )
    latest: dict[str, Baseline] = {}
    own = frozenset(as_recorded(ref) for ref in own)  # a folder however a trial named it
    prompt = prompt_of(experiment)
    for run in runs:
        model = run.data.tags.get(MODEL_TAG, "")
        kind = run.data.params.get("backend")
        mine = model in own or as_recorded(model) in own
        # Asked another way (a chat template, not "###"), it is not this study's base model;
        # a run recorded before the tag existed says nothing, and counts as before.
        asked = run.data.tags.get(PROMPT_TAG, prompt) == prompt
        if model not in latest and not mine and asked and kind == experiment.config.backend.kind:
            baseline = _evaluated(run, data)
            if baseline is not None:
                latest[model] = baseline
    return list(latest.values())


def unweighed_evaluations(uri: str, parent_run_id: str | None, weighed: set[str]) -> list[str]:
    """The `harness evaluate` runs beside the study's runs still tagged on a report's front that
    this report does not weigh (a later evaluation of the model replaced them, or the data
    changed): the report turns them `false`, so the MLflow UI shows what the report shows."""
    from mlflow.exceptions import MlflowException

    from harness.sweep.evaluation import EVALUATION_TAG
    from harness.tracking.record import REPORT_FRONT_TAG
    from harness.tracking.store import open_store

    client = open_store(uri)
    if client is None or not parent_run_id:
        return []
    try:  # a parent run gone is said where the report's files are logged on it
        runs = client.search_runs(
            [client.get_run(parent_run_id).info.experiment_id],
            filter_string=(
                f"tags.`{EVALUATION_TAG}` = 'evaluation' and tags.`{REPORT_FRONT_TAG}` = 'true'"
            ),
        )
    except MlflowException:
        return []
    return [run.info.run_id for run in runs if run.info.run_id not in weighed]


def _evaluated(run: Any, data: PreparedData) -> Baseline | None:
    from harness.sweep.evaluation import MODEL_TAG, TEST_CORRECT_TAG, VALID_CORRECT_TAG

    tags, metrics = run.data.tags, run.data.metrics
    try:
        right = unpack_correct(tags.get(VALID_CORRECT_TAG, ""))
        correct = unpack_correct(tags.get(TEST_CORRECT_TAG, ""))
    except ValueError:
        return None
    if len(right) != len(data.validation) or len(correct) != len(data.test) or not len(right):
        return None
    model = tags[MODEL_TAG]
    zero_shot = tags.get("zero_shot") == "true"
    synthetic = " (synthetic: test server)" if tags.get(SYNTHETIC_TAG) == "true" else ""
    made = "zero-shot" if zero_shot else "made before this study, its training not counted"
    note = f"{made}; scored by `harness evaluate`, MLflow run {run.info.run_id}{synthetic}"
    paid = float(metrics.get("eval_cost_usd", 0.0))
    # Hosting bills by the hour, called or not: a month of it, never a price per request.
    hosting, hours = metrics.get("eval_hosting_usd", 0.0), metrics.get("eval_hosting_hours", 0.0)
    return Baseline(
        f"{model} without fine-tuning" if zero_shot else f"{model} (evaluated)",
        float(metrics.get("test_accuracy", correct.mean())),
        metrics.get("test_macro_f1"),
        paid,
        note,
        correct,
        float(right.mean()),
        right,
        synthetic=bool(synthetic),
        per_request=max(paid - hosting, 0.0) / (len(right) + len(correct)),
        hosting_per_hour=hosting / hours if hours > 0 else None,
        tuned=not zero_shot,
        run_id=run.info.run_id,
    )


def compute_baselines(
    experiment: Experiment,
    reference: pd.DataFrame | None,
    notes: list[str],
    own: frozenset[str] = frozenset(),
    sources: Sequence[Experiment] = (),
) -> tuple[list[Baseline], int | None]:
    """Every baseline, and the number of validation examples the trials were scored on.

    The dataset is prepared again from the experiment file (same seed, same split); when it no
    longer yields the test set the trials were scored on (`reference`), baselines are skipped
    rather than compared on different examples, and the validation size is not known.

    Args:
        experiment: The experiment whose dataset and backend to use.
        reference: The trials' test set (columns text, true), or None when no trial has
            predictions.
        notes: Receives a sentence for anything that was skipped.
        own: The trials' models, never a baseline when `harness evaluate` scored one.
        sources: Other experiments on the same data (a comparison's) whose `harness evaluate`
            runs count too.

    Returns:
        The baselines (each scored on validation and test), and the validation size (None when
        the dataset could not be prepared as the trials saw it).
    """
    from harness.data.prepare import prepare_experiment

    base = base_model_baseline(experiment)
    try:
        data, _ = prepare_experiment(experiment)
    except HarnessError as exc:
        notes.append(f"Baselines skipped: the dataset could not be prepared ({exc}).")
        return [base], None
    if reference is not None and (
        tuple(reference["text"]) != data.test.texts or tuple(reference["true"]) != data.test.labels
    ):
        notes.append(
            "Baselines skipped: the dataset as configured now does not give the test set the "
            "trials were scored on."
        )
        return [base], None
    rate = experiment.config.backend.compute_dollars_per_hour
    evaluated: list[Baseline] = []
    for source in (experiment, *sources):
        for found in evaluated_baselines(source, data, own):
            if found.run_id in {b.run_id for b in evaluated}:  # one run, seen by two studies
                continue
            if found.name in {b.name for b in evaluated}:  # e.g. asked another way (a chat study)
                found = replace(found, name=f"{found.name} (scored for {source.study_name})")
            evaluated.append(found)
    if any(b.name == base.name for b in evaluated):  # the base model was scored zero-shot
        base = next(b for b in evaluated if b.name == base.name)
        evaluated.remove(base)
    cheap = [majority_baseline(data), tfidf_baseline(data, rate)]
    return [*cheap, base, *evaluated], len(data.validation) or None

"""Hand-off: register a sweep's chosen trial in the MLflow model registry, and call it.

`promote` turns one trial into a registered model version under an alias (`champion` unless
told otherwise): the local backend's fine-tuned weights as a loadable pyfunc model, or an OpenAI
fine-tune's model id with its prompt format (see `harness.handoff.pyfunc`). The model is logged
to the trial's own MLflow run, so the UI shows it under the run that measured it, and the
version is tagged with the trial number, test accuracy, cost and data digest, and described with
the reason it was promoted (a test server's model is marked synthetic in both). Promoting a trial
that is already registered only moves the alias (and says why in the description).

Calling a promoted model lives in `harness.handoff.serve`.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from harness.config import Experiment
from harness.errors import ConfigError, HarnessError
from harness.handoff.model_log import log_model
from harness.handoff.notes import (
    MODEL_DESCRIPTION_START,
    is_synthetic,
    model_description,
    trial_cost,
    trial_test_accuracy,
    version_description,
    version_tags,
)
from harness.handoff.serve import DEFAULT_ALIAS, pointed_at
from harness.records import usd
from harness.sweep.study import completed_trials, load_existing_study, pareto_numbers
from harness.tracking.record import REGISTERED_MODEL_TAG, TrialRecord
from harness.tracking.store import missing_store, open_store, tracking_uri

REGISTERED_SUFFIX = "-classifier"


@dataclass(frozen=True)
class Promotion:
    """What `promote` registered, and why that trial."""

    name: str
    version: str
    alias: str
    trial_number: int
    run_id: str
    backend: str
    test_accuracy: float
    cost_usd: float
    reason: str
    reused: bool  # the trial was registered before: only the alias moved
    synthetic: bool = False  # trained and scored on a test server: plumbing, never a result

    @property
    def uri(self) -> str:
        """The URI `mlflow.pyfunc.load_model` and `harness predict` take."""
        return f"models:/{self.name}@{self.alias}"


def registered_model_name(experiment: Experiment) -> str:
    """`<experiment name>-classifier`, with characters the registry dislikes replaced by `-`."""
    base = experiment.config.tracking.experiment_name or experiment.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-") + REGISTERED_SUFFIX


def choose_trial(study: Any, trial_number: int | None = None) -> tuple[FrozenTrial, str]:
    """The trial to promote and a sentence saying why.

    By default: the trial on the Pareto front with the highest validation accuracy (the study's
    objective; the test set only confirms), ties going to the cheaper one; with one objective the
    study's best trial. `promote` prefers the one `harness report` recommends (`_report_choice`).

    Raises:
        ConfigError: The study has no completed trial, or `trial_number` is not one of them.
    """
    done = {t.number: t for t in completed_trials(study)}
    if not done:
        raise ConfigError(f"study {study.study_name!r} has no completed trial to promote yet")
    front = sorted(pareto_numbers(study))
    if trial_number is not None:
        if trial_number not in done:
            raise ConfigError(_not_completed(study, trial_number, sorted(done)))
        where = "on" if trial_number in front else "not on"
        return done[trial_number], f"trial {trial_number}, as asked ({where} the Pareto front)"

    def valid(trial: FrozenTrial) -> float:
        accuracy = TrialRecord.from_attrs(trial.user_attrs).selection_accuracy
        return float(accuracy if accuracy is not None else trial.values[0])

    best = max((done[n] for n in front), key=lambda t: (valid(t), -trial_cost(t), -t.number))
    if len(study.directions) == 1:
        why = (
            "the study's best trial (one objective: validation accuracy, within any cost "
            "constraint)"
        )
    else:
        why = (
            "the highest validation accuracy on the Pareto front "
            f"(trials {', '.join(map(str, front))})"
        )
        tied = [n for n in front if n != best.number and valid(done[n]) == valid(best)]
        if tied:
            why += f", and cheaper than trial(s) {', '.join(map(str, tied))} at that accuracy"
    return best, (
        f"trial {best.number}: {why}; validation accuracy {valid(best):.4f}, test accuracy "
        f"{trial_test_accuracy(best):.4f}, cost {usd(trial_cost(best))}."
    )


# How a trial that is not complete is named when it is asked for (Optuna's state names).
_STATE_WORDS = {"FAIL": "failed", "PRUNED": "pruned", "RUNNING": "running", "WAITING": "queued"}


def _not_completed(study: Any, number: int, done: list[int]) -> str:
    """Why trial `number` cannot be promoted: its state (a failed trial has no model), or that
    the study has no such trial."""
    state = next((t.state.name for t in study.get_trials(deepcopy=False) if t.number == number), "")
    why = f", {_STATE_WORDS[state]}," if state in _STATE_WORDS else ""
    so = ", so it has no model to promote" if why else ""
    return (
        f"trial {number}{why} is not a completed trial of study {study.study_name!r}{so} "
        f"(completed: {', '.join(map(str, done))})"
    )


def _report_choice(experiment: Experiment) -> tuple[int, str] | None:
    """The trial `harness report` recommends, and its reason; when its answer is a baseline (do
    not fine-tune), the fine-tuned trial its walk would choose, saying so (None: one objective,
    or no report can be built, and `choose_trial`'s default applies)."""
    if experiment.config.study.objectives != ["accuracy", "cost"]:
        return None
    from harness.report.build import build_report

    try:
        rec = build_report(experiment).recommendation
    except HarnessError:
        return None
    if not rec.chosen.is_baseline:
        return rec.chosen.number, (
            f"trial {rec.chosen.number}, as `harness report` recommends: {rec.text}"
        )
    if rec.fine_tuned is None:
        return None
    return rec.fine_tuned.number, (
        f"trial {rec.fine_tuned.number}, as `harness report` recommends among the fine-tuned "
        f"models; but its answer is not to fine-tune: {rec.text}"
    )


def promote(
    experiment: Experiment,
    trial_number: int | None = None,
    alias: str = DEFAULT_ALIAS,
    new_version: bool = False,
) -> Promotion:
    """Register a trial's model and point `alias` at it.

    Args:
        experiment: The experiment whose study holds the trial.
        trial_number: The trial to register; None takes the one `harness report` recommends
            (with one objective, or no report, `choose_trial`'s default).
        alias: The registry alias to set on the new (or existing) version.
        new_version: Register a new version even where the trial has one (`--set` moved it).

    Returns:
        The registered name, version, alias (see `Promotion.uri`) and the reason for the trial.

    Raises:
        ConfigError: No study, no such trial, the trial has no MLflow run, no tracking store
            (none is created), or a bad alias.
        BackendError: The trial's weights are missing (local backend).
    """
    import mlflow

    _check_alias(alias)  # before anything is logged or registered
    recommended = _report_choice(experiment) if trial_number is None else None
    study = load_existing_study(experiment)
    trial, reason = choose_trial(study, recommended[0] if recommended else trial_number)
    if recommended:
        reason = recommended[1]
    uri = tracking_uri(experiment)
    client = open_store(uri)
    if client is None:  # opening it would leave an empty store behind
        raise ConfigError(
            f"no MLflow tracking store at {missing_store(uri)}, so no run of trial "
            f"{trial.number} to register; set MLFLOW_TRACKING_URI (or the experiment's "
            "tracking.uri) to the store the sweep logged to"
        )
    run = _trial_run(client, trial)
    synthetic = is_synthetic(study, trial, run)
    name = registered_model_name(experiment)
    backend = run.data.params.get("backend", experiment.config.backend.kind)
    existing = None if new_version else _existing_version(client, name, run.info.run_id)
    version = existing or _register(experiment, trial, run, client, uri, synthetic)
    try:
        client.set_registered_model_alias(name, alias, version.version)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"--alias {alias!r}: {exc.message}") from None
    description = version_description(alias, reason, synthetic)
    client.update_model_version(name, version.version, description=description)
    if existing is not None:  # registered before, maybe by an older harness: tags as of now
        for key, value in version_tags(trial, run, synthetic).items():
            client.set_model_version_tag(name, version.version, key, value)
    return Promotion(
        name=name,
        version=str(version.version),
        alias=alias,
        trial_number=trial.number,
        run_id=run.info.run_id,
        backend=backend,
        test_accuracy=trial_test_accuracy(trial),
        cost_usd=trial_cost(trial),
        reason=reason,
        reused=existing is not None,
        synthetic=synthetic,
    )


def _register(
    experiment: Experiment, trial: FrozenTrial, run: Any, client: Any, uri: str, synthetic: bool
) -> Any:
    """Log the trial's model on its run and register it as a new version; MLflow's version."""
    import mlflow

    name = registered_model_name(experiment)
    backend = run.data.params.get("backend", experiment.config.backend.kind)
    with pointed_at(uri), tempfile.TemporaryDirectory() as tmp:
        logged = log_model(experiment, trial, run, backend, Path(tmp))
        # MLflow prints "Successfully registered model ..." to stderr; the CLI says it.
        with contextlib.redirect_stderr(io.StringIO()):
            version = mlflow.register_model(
                logged.model_uri, name, tags=version_tags(trial, run, synthetic)
            )
    # A name someone registered before keeps their description; the harness's is refreshed.
    described = client.get_registered_model(name).description or ""
    if not described or described.startswith(MODEL_DESCRIPTION_START):
        client.update_registered_model(name, description=model_description(experiment))
    client.set_tag(run.info.run_id, REGISTERED_MODEL_TAG, f"{name}/{version.version}")
    return version


def _check_alias(alias: str) -> None:
    """ConfigError for an alias the registry would refuse (MLflow's own checks: characters,
    length, `latest` and `v<N>` reserved), so a refused alias registers nothing."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils import validation

    # Private helpers, renamed in MLflow 3.18 (`_validate_model_alias_name` -> `_validate_alias_
    # name`): looked up by either name, so every MLflow the dependency range allows checks alike.
    checks = [
        getattr(validation, new, None) or getattr(validation, old)
        for new, old in (
            ("_validate_alias_name", "_validate_model_alias_name"),
            ("_validate_alias_name_reserved", "_validate_model_alias_name_reserved"),
        )
    ]
    try:
        for check in checks:
            check(alias)
    except MlflowException as exc:
        raise ConfigError(f"--alias {alias!r}: {exc.message}") from None


def _trial_run(client: Any, trial: FrozenTrial) -> Any:
    from mlflow.exceptions import MlflowException

    run_id = TrialRecord.from_attrs(trial.user_attrs).mlflow_run_id
    if not run_id:
        raise ConfigError(f"trial {trial.number} has no MLflow run (was the sweep tracked?)")
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError(
            f"trial {trial.number}: its MLflow run {run_id} is not in {client.tracking_uri}; "
            "set MLFLOW_TRACKING_URI to the store the sweep logged to"
        ) from None


def _existing_version(client: Any, name: str, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None

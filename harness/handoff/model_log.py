"""Log a trial's model to its own MLflow run as a pyfunc model: what `promote` registers."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from harness.config import Experiment
from harness.errors import BackendError, ConfigError
from harness.handoff.environment import harness_code, model_requirements, model_signature
from harness.handoff.pyfunc import ENTRY_POINT, TEXT_COLUMN
from harness.tracking.record import (
    DATA_DIGEST_TAG,
    FINE_TUNED_MODEL_TAG,
    MODEL_FILES,
    TRIAL_TAG,
    TrialRecord,
)

LOGGED_MODEL_NAME = "classifier"
# Requirements are pinned (`environment.model_requirements`) so that logging a model never loads
# it in a subprocess to guess them. `harness` itself is not on PyPI: its code travels with the
# model (`environment.harness_code`).


def log_model(
    experiment: Experiment, trial: FrozenTrial, run: Any, backend_kind: str, tmp: Path
) -> Any:
    """Log the trial's pyfunc model to its own run; returns MLflow's ModelInfo."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    package = _package(experiment, trial, run, backend_kind, tmp)
    # Its study: what a model it has to deploy to call (Azure) is tagged with, so that a sweep
    # of the study deletes a deployment a killed call left; with its trial, what an error that
    # says how to register it again names (`pyfunc.name_repromote`).
    origin = {"study": experiment.study_name, "trial": trial.number}
    package = replace(package, config={**package.config, **origin})
    entry = tmp / "harness_classifier.py"
    entry.write_text(ENTRY_POINT, encoding="utf-8")
    # Created here so the model lands in the trial's experiment; Model.log alone would put it
    # in the active (Default) experiment. Logged to the trial's run without reopening it.
    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
    model = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=LOGGED_MODEL_NAME,
        source_run_id=run.info.run_id,
        params=dict(run.data.params),
        tags={TRIAL_TAG: str(trial.number)},
    )
    try:
        return _log_pyfunc(model.model_id, run, package, entry, tmp)
    except BaseException:
        # MLflow marks the model FAILED on an Exception only: on Ctrl-C or SIGTERM it would stay
        # PENDING on the trial's run for good, beside the one a retry logs.
        with contextlib.suppress(Exception):
            if client.get_logged_model(model.model_id).status == LoggedModelStatus.PENDING:
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise


def _log_pyfunc(model_id: str, run: Any, package: Any, entry: Path, tmp: Path) -> Any:
    import mlflow
    from mlflow.models import Model

    with warnings.catch_warnings():
        # No input example on purpose: validating one would load the weights a second time, or
        # for OpenAI call the paid API, while the signature already says what goes in and out.
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        return Model.log(
            None,  # artifact_path: deprecated in MLflow 3 for `name`, but still positional
            name=LOGGED_MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run.info.run_id,
            model_id=model_id,
            python_model=str(entry),
            artifacts=package.artifacts or None,
            model_config=package.config,
            signature=model_signature(package.config["labels"]),
            metadata={"labels": package.config["labels"], "text_column": TEXT_COLUMN},
            code_paths=[harness_code(tmp / "code")],
            pip_requirements=model_requirements(package.requirements),
            flavor_name="pyfunc.ModelFromCode",
        )


def _package(
    experiment: Experiment, trial: FrozenTrial, run: Any, backend_kind: str, tmp: Path
) -> Any:
    """What the trial's backend says its model must carry (labels from the data it trained on).
    A model whose files are not on this machine is fetched from its run, where a sweep tracked
    on a server put them."""
    from harness.backends import load_backend
    from harness.data.prepare import prepare_experiment

    config = experiment.config.backend
    if config.kind != backend_kind:
        raise ConfigError(
            f"trial {trial.number} ran on the {backend_kind} backend but {experiment.path} now "
            f"names backend.kind {config.kind!r}"
        )
    model_ref = TrialRecord.from_attrs(trial.user_attrs).model_ref
    model_ref = model_ref or run.data.tags.get(FINE_TUNED_MODEL_TAG)
    if not model_ref:
        raise ConfigError(f"trial {trial.number} recorded no fine-tuned model")
    data, _ = prepare_experiment(experiment)
    trained_on = run.data.tags.get(DATA_DIGEST_TAG)
    if trained_on and trained_on != data.digest:
        raise ConfigError(
            f"{experiment.path}: its data no longer matches what trial {trial.number} trained on "
            f"(digest {data.digest[:12]} now, {trained_on[:12]} then), so the label set is unsure"
        )
    backend = load_backend(config)
    try:
        return backend.package(model_ref, data.labels)
    except BackendError:
        fetched = _fetch_model_files(run, tmp)
        if fetched is None:
            raise
        return backend.package(fetched, data.labels)


def _fetch_model_files(run: Any, tmp: Path) -> str | None:
    """The run's copy of its model's files, downloaded; None if it has none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=MODEL_FILES, dst_path=str(tmp)
        )
    except (MlflowException, OSError):
        return None
    entries = list(Path(path).iterdir())
    return str(entries[0]) if len(entries) == 1 else None

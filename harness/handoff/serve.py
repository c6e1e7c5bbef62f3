"""Call a promoted model: `harness predict`, or any MLflow model URI.

`load_registered_model` takes `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/...`, a path, or
a bare registered name meaning its `champion`, and turns a bad URI into one clear error.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError
from harness.tracking.store import missing_store, open_store, tracking_uri

DEFAULT_ALIAS = "champion"
_URI_VARIABLE = "MLFLOW_TRACKING_URI"


@contextmanager
def pointed_at(uri: str) -> Iterator[None]:
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


def resolve_model_uri(value: str) -> str:
    """A bare registered name means its champion (`demo-classifier` -> `models:/...@champion`),
    and `NAME@ALIAS` that alias (`demo-classifier@challenger` -> `models:/...@challenger`)."""
    if ":" in value or "/" in value or "\\" in value or Path(value).exists():
        return value  # a URI or a path
    return f"models:/{value}" if "@" in value else f"models:/{value}@{DEFAULT_ALIAS}"


def find_model(model_uri: str, store_uri: str | None = None) -> tuple[str, str]:
    """Check that `model_uri` names a model that exists, without loading or downloading it.

    `harness serve` calls this before it starts a server, and `load_registered_model` before it
    loads, so both refuse a bad reference with the same message. A registry entry (name, version,
    alias) or a run is looked up in the store; a path must exist.

    Args:
        model_uri: As for `load_registered_model`.
        store_uri: The tracking store holding the registry; `tracking_uri()` by default.

    Returns:
        The model URI (a bare name resolved to its champion) and the store URI.

    Raises:
        ConfigError: No such registered model, version, alias, run or path; or no local store
            at `store_uri` (none is created: see `missing_store`).
    """
    from mlflow.exceptions import MlflowException

    uri, store = resolve_model_uri(model_uri), store_uri or tracking_uri()
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("models", "runs"):
        db = missing_store(store)
        if db is not None:
            raise ConfigError(
                f"cannot load model {uri!r}: no MLflow tracking store at {db}, so no registry to "
                "find it in; run the command where `harness promote` ran, or name the store with "
                "--experiment EXPERIMENT or MLFLOW_TRACKING_URI"
            )
        with pointed_at(store):
            try:
                _underlying_uri(scheme, uri)
            except (MlflowException, OSError, ValueError) as exc:
                raise _load_error(uri, store, exc) from None
    elif not scheme and not Path(uri).exists():
        raise ConfigError(f"cannot load model {uri!r}: no such folder{_known_models(store)}")
    return uri, store


def load_registered_model(model_uri: str, store_uri: str | None = None) -> Any:
    """Load a promoted (or any pyfunc) model; a bad URI is one clear `ConfigError`.

    Args:
        model_uri: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/...`, a path, or a bare
            registered model name (its `champion`).
        store_uri: The tracking store holding the registry; `tracking_uri()` by default.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri, store = find_model(model_uri, store_uri)
    with pointed_at(store):
        try:
            model = mlflow.pyfunc.load_model(uri)
        except HarnessError:
            raise
        except (MlflowException, OSError, ValueError) as exc:
            raise _load_error(uri, store, exc) from None
        _origin_from_registry(model, uri)
    return model


def _origin_from_registry(model: Any, uri: str) -> None:
    """A model promoted before its package named its trial: the registered version's tags do
    (trial number, study), for an error that says how to register it again."""
    from mlflow import MlflowClient

    from harness.handoff.pyfunc import HarnessClassifier
    from harness.tracking.record import STUDY_TAG, TRIAL_TAG

    try:
        classifier = model.unwrap_python_model()
    except Exception:  # not a python model: nothing of ours to name
        return
    if not isinstance(classifier, HarnessClassifier) or classifier.trial is not None:
        return
    found = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@(.+))", uri)
    if found is None:
        return
    name, number, alias = found.groups()
    client = MlflowClient()
    try:
        version = (
            client.get_model_version(name, number)
            if number
            else client.get_model_version_by_alias(name, alias)
        )
    except Exception:  # the model loaded; a registry that cannot say more leaves the hint as is
        return
    classifier.trial = version.tags.get(TRIAL_TAG)
    classifier.study = classifier.study or version.tags.get(STUDY_TAG)


def _underlying_uri(scheme: str, uri: str) -> str:
    """Where a `models:/` or `runs:/` URI's files are, as MLflow resolves it to load them (it
    reads the registry or the run, never the files); MlflowException when there is no such
    model, version, alias or run."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    if scheme == "models":
        return str(ModelsArtifactRepository.get_underlying_uri(uri))
    return str(RunsArtifactRepository.get_underlying_uri(uri))


def _load_error(uri: str, store: str, exc: Exception) -> ConfigError:
    message = getattr(exc, "message", None) or str(exc)
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    first = first.rstrip(".")  # the list of models follows, after its own period
    return ConfigError(
        f"cannot load model {uri!r} from {store}: {first}{_known_models(store, uri)}"
    )


def classify(model: Any, texts: list[str]) -> Any:
    """`model.predict` on a frame of `texts` (its `text` column, as the signature names it); an
    input the model refuses is one clear `ConfigError`, and a backend's error is raised as the
    backend raised it (the pyfunc model wraps it for model servers)."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(pd.DataFrame({"text": texts}))
    except MlflowException as exc:
        if isinstance(exc.__cause__, HarnessError):
            raise exc.__cause__ from None
        first = exc.message.strip().splitlines()[0] if exc.message.strip() else "refused"
        raise ConfigError(f"the model refused the texts: {first}") from None


def _known_models(store: str, uri: str = "") -> str:
    """What the registry at `store` holds, as the end of an error about `uri`: the registered
    names, and for a name it has (a version or alias that is not there), its versions and aliases.
    """
    client = open_store(store)  # never create a store to list what it holds
    if client is None:
        return ""
    try:
        models = {m.name: m for m in client.search_registered_models()}
        if not models:
            return ". No model is registered there yet: run `harness promote EXPERIMENT` first."
        known = f". Registered models: {', '.join(sorted(models))}."
        name = (
            re.split(r"[/@]", uri.removeprefix("models:/"))[0] if uri.startswith("models:/") else ""
        )
        if name not in models:
            return known
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    except Exception:  # the message is already an error; a listing that fails adds nothing
        return ""
    aliases = ", ".join(f"{a} (version {v})" for a, v in sorted(models[name].aliases.items()))
    return (
        f"{known} {name} has {'version' if len(versions) == 1 else 'versions'} "
        f"{', '.join(map(str, versions)) or 'none'}; aliases: {aliases or 'none'}."
    )

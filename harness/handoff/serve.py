"""Call a promoted model: `harness predict`, or any MLflow model URI.

`load_registered_model` takes `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/...`, a path, or
a bare registered name meaning its `champion`, and turns a bad URI into one clear error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError
from harness.tracking.store import tracking_uri

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
    with pointed_at(store):
        try:
            return mlflow.pyfunc.load_model(uri)
        except HarnessError:
            raise
        except (MlflowException, OSError, ValueError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
            first = first.rstrip(".")  # the list of models follows, after its own period
            raise ConfigError(
                f"cannot load model {uri!r} from {store}: {first}{_known_models(store)}"
            ) from None


def classify(model: Any, texts: list[str]) -> Any:
    """`model.predict` on a frame of `texts` (its `text` column, as the signature names it); an
    input the model refuses is one clear `ConfigError`."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(pd.DataFrame({"text": texts}))
    except MlflowException as exc:
        first = exc.message.strip().splitlines()[0] if exc.message.strip() else "refused"
        raise ConfigError(f"the model refused the texts: {first}") from None


def _known_models(store: str) -> str:
    from mlflow import MlflowClient

    try:
        names = sorted(m.name for m in MlflowClient(tracking_uri=store).search_registered_models())
    except Exception:  # the message is already an error; a listing that fails adds nothing
        return ""
    if not names:
        return ". No model is registered there yet: run `harness promote EXPERIMENT` first."
    return f". Registered models: {', '.join(names)}."

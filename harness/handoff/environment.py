"""What a logged model carries so it runs anywhere: its signature, its code and its requirements.

- The signature names its input: one string column `text`. MLflow checks it before the model
  sees a frame, so a frame whose first column is an `id` is classified by its `text` column, a
  frame without one is refused naming the columns it had, and other columns are dropped.
- The code: a copy of the `harness` package logged with the model (`code_paths`), which MLflow
  puts first on `sys.path` when it loads the model, so the model needs no `harness` installed
  and always runs the code it was promoted with.
- The requirements: what that code imports (the harness's own dependencies, without extras)
  and what the backend's model needs, pinned to the versions installed where it was promoted,
  so `mlflow models serve --env-manager virtualenv` (or `uv`) builds an environment that works.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.handoff.pyfunc import SCORE_PREFIX, TEXT_COLUMN

# The harness's own dependencies, where its distribution metadata cannot be read (run from a
# source tree that was never installed). Kept in step with pyproject.toml by a test.
_CORE = (
    *("mlflow", "optuna", "pandas", "pyarrow", "scikit-learn", "numpy", "pydantic", "pyyaml"),
    "rich",
)
# Dependencies of the commands only (`harness dashboard`, shared PostgreSQL studies, charts,
# the CLI): a model never imports them.
_NOT_FOR_MODELS = frozenset({"optuna-dashboard", "psycopg", "matplotlib", "typer", "plotly"})


def model_signature(labels: list[str]) -> Any:
    """Input: a string column `text`; output: label, confidence and one score per label."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs: list[Any] = [ColSpec("string", "label"), ColSpec("double", "confidence")]
    outputs += [ColSpec("double", f"{SCORE_PREFIX}{label}") for label in labels]
    return ModelSignature(inputs=Schema([ColSpec("string", TEXT_COLUMN)]), outputs=Schema(outputs))


def model_requirements(backend_packages: tuple[str, ...]) -> list[str]:
    """Pinned requirements: the harness's model-side dependencies, then the backend's."""
    names = [*_core_dependencies(), *backend_packages]
    return [_pin(name) for name in dict.fromkeys(names)]


def harness_code(into: Path) -> str:
    """A copy of the running `harness` package under `into`, without caches; its path."""
    import harness

    source = Path(harness.__file__).parent
    target = into / "harness"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)


def _core_dependencies() -> list[str]:
    from packaging.requirements import Requirement

    try:
        declared = metadata.requires("harness") or []
    except metadata.PackageNotFoundError:
        return list(_CORE)
    names = []
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        if requirement.name not in _NOT_FOR_MODELS:
            names.append(requirement.name)
    return names


def _pin(name: str) -> str:
    try:
        return f"{name}=={metadata.version(name).split('+')[0]}"
    except metadata.PackageNotFoundError:
        return name

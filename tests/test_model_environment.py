"""What a promoted model carries, without promoting one: its signature names a `text` input, and
its requirements are the harness's own dependencies (those a model imports) and the backend's."""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.requirements import Requirement

from harness.handoff import environment
from tests.conftest import ROOT


def test_the_fallback_dependencies_follow_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {Requirement(line).name for line in declared}
    assert set(environment._CORE) == names - environment._NOT_FOR_MODELS


def test_requirements_are_pinned_and_name_the_backend_packages() -> None:
    pins = environment.model_requirements(("torch", "transformers"))
    names = [pin.split("==")[0] for pin in pins]
    assert {"mlflow", "pandas", "pydantic", "torch", "transformers"} <= set(names)
    assert "harness" not in names and "optuna-dashboard" not in names
    assert f"mlflow=={metadata.version('mlflow')}" in pins
    assert len(names) == len(set(names))


def test_the_signature_names_a_text_input_and_every_score() -> None:
    signature = environment.model_signature(["negative", "positive"])
    assert signature.inputs.input_names() == ["text"]
    assert signature.outputs.input_names() == [
        "label",
        "confidence",
        "score_negative",
        "score_positive",
    ]

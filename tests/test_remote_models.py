"""A sweep tracked on an MLflow server can be promoted from a machine without its models.

The local backend keeps a trial's weights on the worker's disk; with a remote tracking store the
sweep also copies them to the trial's run, so `promote` and `predict` work from anywhere. Here
the "other machine" is the same one with the models folder deleted.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from harness.config import load_experiment
from harness.handoff.promote import promote
from harness.handoff.serve import load_registered_model
from harness.sweep.loop import run_sweep
from tests.conftest import write_experiment
from tests.services import MlflowServer, mlflow_server
from tests.test_sweep import RecordingView

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as running:
        yield running


def test_a_local_model_is_promoted_and_called_after_its_folder_is_gone(
    tmp_path: Path, tiny_csv: Path, server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    space = {"n_epochs": 1, "learning_rate_multiplier": 4.0, "batch_size": 8}
    path = write_experiment(tmp_path, tiny_csv, space=space, study={"n_trials": 1})
    experiment = load_experiment(str(path))
    outcome = run_sweep(experiment, RecordingView())
    assert len(outcome.results) == 1, outcome.failures
    shutil.rmtree(tmp_path / "models")  # as on a machine that never ran the sweep

    done = promote(experiment)
    model = load_registered_model(done.uri, server.uri)
    texts = ["A warm, funny film that never drags.", "Dull and far too long."]
    frame = model.predict(pd.DataFrame({"text": texts}))
    assert list(frame.columns[:2]) == ["label", "confidence"] and len(frame) == 2
    assert set(frame["label"]) <= {"positive", "negative"}

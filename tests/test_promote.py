"""`harness promote` on the in-memory backend (`tests/memory_backend.py`): what a registered
version records and what a refused promotion leaves behind, in seconds. Promoting and calling
real local and OpenAI models is `tests/test_registry.py` (slow tier)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

import harness.backends
from harness.config import Experiment, load_experiment
from harness.errors import ConfigError
from harness.handoff.promote import promote
from harness.records import usd
from harness.sweep import session
from harness.sweep.loop import run_sweep
from harness.sweep.study import pareto_numbers
from harness.tracking.record import REGISTERED_MODEL_TAG, TrialRecord
from tests import memory_backend
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import review_rows, write_csv, write_experiment
from tests.test_sweep import RecordingView
from tests.test_sweep_fast import _TestServerBackend

NAME = "tiny-classifier"
# Two epochs: every trial leaves an epoch-1 checkpoint, a trial of its own.
SPACE = {
    "n_epochs": 2,
    "learning_rate_multiplier": {"type": "float", "low": 0.5, "high": 4.0},
    "batch_size": 8,
}


@pytest.fixture
def swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Experiment:
    """A finished two-trial sweep on a test-server backend that costs well under a millionth
    of a dollar a trial; `promote` loads the same backend."""
    memory = _TestServerBackend(kind="local")  # the kind the experiment file names
    monkeypatch.setattr(memory_backend, "USD_PER_WORD", 1e-9)
    monkeypatch.setattr(session, "load_backend", lambda config, progress=None: memory)
    monkeypatch.setattr(harness.backends, "load_backend", lambda config, progress=None: memory)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    data = write_csv(tmp_path / "reviews.csv", review_rows(60, seed=2))
    study = {"n_trials": 2, "sampler": {"kind": "random"}}
    path = write_experiment(tmp_path, data, SPACE, study=study)
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 2, outcome.failures
    return load_experiment(str(path))


def _client() -> MlflowClient:
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def _study() -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")


def test_a_refused_alias_registers_nothing(swept: Experiment) -> None:
    # Found by hand: `--alias v1` (reserved by MLflow) registered a new version, logged the
    # model and tagged the run, then failed on the alias.
    with pytest.raises(ConfigError, match="--alias 'v1'"):
        promote(swept, trial_number=0, alias="v1")
    client = _client()
    assert client.search_model_versions(f"name = '{NAME}'") == []
    run = client.get_run(str(_study().trials[0].user_attrs["mlflow_run_id"]))
    assert REGISTERED_MODEL_TAG not in run.data.tags
    assert not run.outputs.model_outputs, "no model logged on the run"
    result = run_cli("promote", str(swept.path), "--trial", "0", "--alias", "bad alias")
    assert_clean_error(result, "--alias 'bad alias'")
    assert result.exit_code == 2
    assert client.search_model_versions(f"name = '{NAME}'") == []


def test_a_checkpoint_of_a_test_server_is_registered_as_synthetic_with_its_exact_cost(
    swept: Experiment,
) -> None:
    # Found by hand on the OpenAI fake: trial 0's version said synthetic=true, the version of
    # its epoch checkpoint synthetic=false (its run never got the backend's note).
    # Both trials train two epochs on the same data, so the cheapest point, on the front and
    # kept, is an epoch-1 checkpoint.
    study = _study()
    front = pareto_numbers(study)
    checkpoint = next(
        t for t in study.trials if t.number in front and "checkpoint_of" in t.user_attrs
    )
    record = TrialRecord.from_attrs(checkpoint.user_attrs)
    assert record.cost_usd is not None and 0 < record.cost_usd < 1e-6
    done = promote(swept, trial_number=checkpoint.number)
    version = _client().get_model_version(NAME, done.version)
    assert version.tags["synthetic"] == "true"
    # Its significant digits, as the report and `harness trials` show them (was "0.000001").
    assert float(version.tags["cost_usd"]) == pytest.approx(record.cost_usd, rel=1e-5)
    # The version says why it was promoted, and that its figures are not a result.
    assert f"trial {checkpoint.number}, as asked" in version.description
    assert "synthetic" in version.description.lower()

    # A version an older harness registered gets its tags put right when it is promoted again.
    _client().set_model_version_tag(NAME, done.version, "synthetic", "false")
    result = run_cli("promote", str(swept.path), "--trial", str(checkpoint.number))
    assert result.exit_code == 0, result.output
    assert "was already registered" in result.stdout
    assert _client().get_model_version(NAME, done.version).tags["synthetic"] == "true"
    assert "(synthetic: test server)" in result.stdout
    assert f"cost {usd(record.cost_usd)})" in result.stdout  # as the report writes it


def test_a_failed_or_pruned_trial_is_refused_by_its_state(swept: Experiment) -> None:
    study = _study()
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    pruned = study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    for trial, state in ((failed, "failed"), (pruned, "pruned")):
        result = run_cli("promote", str(swept.path), "--trial", str(trial.number))
        assert_clean_error(
            result, f"trial {trial.number}, {state}, is not", "completed: 0, 1, 2, 3"
        )
        assert result.exit_code == 2
    assert _client().search_registered_models() == []


def test_a_name_registered_by_someone_else_keeps_its_description(swept: Experiment) -> None:
    client = _client()
    client.create_registered_model(NAME, description="The team's sentiment model; ask Ana.")
    done = promote(swept, trial_number=0)
    assert done.version == "1"
    assert client.get_registered_model(NAME).description == "The team's sentiment model; ask Ana."
    # A name the harness made is described by it, and kept up to date.
    other = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    other.delete_registered_model(NAME)
    promote(swept, trial_number=0)
    assert "promoted by `harness promote`" in client.get_registered_model(NAME).description


def test_an_interrupted_promote_or_predict_says_nothing_of_resuming_a_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by hand: Ctrl-C during `harness promote` said "run the same command again to resume
    # the study", as a sweep does; neither promote nor predict has a study to resume.
    # The package's `promote` function hides its module of that name from `import ... as`.
    promoting, serving = (sys.modules[f"harness.handoff.{name}"] for name in ("promote", "serve"))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(promoting, "promote", interrupted)
    monkeypatch.setattr(serving, "load_registered_model", interrupted)
    path = write_experiment(tmp_path, write_csv(tmp_path / "r.csv", review_rows(20)))
    for args in (("promote", str(path)), ("predict", NAME, "a warm film")):
        result = run_cli(*args)
        assert result.exit_code == 130, result.output
        assert result.stderr.strip() == "interrupted", result.stderr


def test_a_setting_that_changes_what_the_model_predicts_is_refused(swept: Experiment) -> None:
    # Found by hand: `promote --set backend.max_length=8` registered a model that reads 8 tokens
    # of each text while its tags quoted the test accuracy measured at the trial's setting.
    result = run_cli("promote", str(swept.path), "--trial", "0", "--set", "backend.max_length=8")
    assert_clean_error(result, "--set backend.max_length")
    assert "backend.models_dir" in result.stderr, "the settings promote may change are named"
    assert result.exit_code == 2
    assert _client().search_model_versions(f"name = '{NAME}'") == []
    # Where the model's files are, and how a hosted one is reached, may change.
    moved = run_cli("promote", str(swept.path), "--trial", "0", "--set", "backend.device=cpu")
    assert moved.exit_code == 0, moved.output


def test_an_interrupt_while_the_model_is_logged_leaves_no_pending_model(
    swept: Experiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow marks a logged model FAILED only on an Exception: Ctrl-C while Model.log wrote the
    # weights left it PENDING on the trial's run for good, and a retry logged a second one.
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Model, "log", interrupted)
    with pytest.raises(KeyboardInterrupt):
        promote(swept, trial_number=0)
    client = _client()
    run = client.get_run(str(_study().trials[0].user_attrs["mlflow_run_id"]))
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    assert models, "the logged model promote created is found"
    assert {m.status for m in models} == {LoggedModelStatus.FAILED}
    assert client.search_model_versions(f"name = '{NAME}'") == []

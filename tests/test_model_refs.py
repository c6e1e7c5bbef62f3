"""A model reference is checked before anything uses it: `harness serve` refuses a name, version or
alias the registry lacks as `harness predict` does (one line, exit 2, no server started), and
looking a model up where there is no tracking store creates none. `harness serve` also says a
busy port is busy without calling its holder a UI, and starts the server without MLflow's
download progress bar when its output is not a terminal.

The registry here is a real sqlite store holding one registered version whose files are never
read: checking a reference needs the registry only, not the model."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from harness.tracking.store import ensure_sqlite_store
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import review_rows, write_csv, write_experiment

NAME = "demo-classifier"
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """A store with `demo-classifier` version 1, alias `champion`; its URI."""
    store = f"sqlite:///{tmp_path}/registry/mlflow.db"
    ensure_sqlite_store(store)
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model(NAME)
    version = client.create_model_version(NAME, source=str(tmp_path / "model"))
    client.set_registered_model_alias(NAME, "champion", version.version)
    return store


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The servers `harness serve` starts: recorded, never run."""
    import harness.cli._serve

    servers: list[Any] = []
    monkeypatch.setattr(harness.cli._serve, "serve", lambda server, _ready: servers.append(server))
    return servers


@pytest.mark.parametrize(
    ("reference", "shown"),
    [
        ("nosuch-classifier", "models:/nosuch-classifier@champion"),
        (f"models:/{NAME}/9", f"models:/{NAME}/9"),
        (f"models:/{NAME}@nosuch", f"models:/{NAME}@nosuch"),
        ("nosuch/folder", "'nosuch/folder': no such folder"),
    ],
)
def test_serve_refuses_a_missing_model_as_predict_does(
    registry: str, started: list[Any], reference: str, shown: str
) -> None:
    env = {"MLFLOW_TRACKING_URI": registry}
    served = run_cli("serve", reference, "--port", "5078", env=env)
    assert_clean_error(served, shown, f"Registered models: {NAME}.")
    assert served.exit_code == 2
    assert len(served.stderr.strip().splitlines()) == 1, served.stderr
    assert started == []  # nothing started, so nothing left listening
    predicted = run_cli("predict", reference, "text", env=env)
    assert predicted.exit_code == 2
    assert predicted.stderr == served.stderr


@pytest.mark.parametrize("reference", [f"models:/{NAME}/9", f"models:/{NAME}@nosuch"])
def test_a_missing_version_or_alias_lists_what_the_model_has(registry: str, reference: str) -> None:
    result = run_cli("serve", reference, env={"MLFLOW_TRACKING_URI": registry})
    assert_clean_error(result, f"{NAME} has version 1; aliases: champion (version 1).")


def test_serve_starts_a_model_the_registry_has(
    registry: str, started: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PROGRESS_BAR, raising=False)  # `predict` in this process sets it
    served = run_cli("serve", NAME, "--port", "5078", env={"MLFLOW_TRACKING_URI": registry})
    assert served.exit_code == 0, served.output
    [server] = started
    assert f"models:/{NAME}@champion" in server.command
    assert server.env["MLFLOW_TRACKING_URI"] == registry
    # Not a terminal: no download progress bar, which a log would get as 100-odd lines.
    assert server.env[PROGRESS_BAR] == "false"


def test_a_bare_name_with_an_alias_means_that_alias(registry: str, started: list[Any]) -> None:
    # Found by hand: `harness predict demo-classifier@challenger` looked up
    # `models:/demo-classifier@challenger@champion`, a model no one can register.
    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    client.set_registered_model_alias(NAME, "challenger", "1")
    env = {"MLFLOW_TRACKING_URI": registry}
    served = run_cli("serve", f"{NAME}@challenger", "--port", "5078", env=env)
    assert served.exit_code == 0, served.output
    assert f"models:/{NAME}@challenger" in started[0].command
    missing = run_cli("serve", f"{NAME}@nosuch", "--port", "5078", env=env)
    assert_clean_error(missing, f"'models:/{NAME}@nosuch'", "aliases: challenger (version 1)")


def test_serve_on_a_busy_port_says_so_without_guessing_a_ui() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("serve", NAME, "--port", str(port))
    assert_clean_error(result, f"--port {port}", "already in use", f"--port {port + 1}")
    assert "UI" not in result.stderr
    assert result.exit_code == 2


def _no_store_left(directory: Path) -> None:
    assert not (directory / "mlruns").exists()
    assert not list(directory.rglob("*.db")), list(directory.rglob("*"))


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_a_lookup_where_there_is_no_store_creates_none(
    tmp_path: Path, started: list[Any], command: str
) -> None:
    args = [command, NAME, *(["great"] if command == "predict" else ["--port", "5078"])]
    result = run_cli(*args)
    assert_clean_error(result, "no MLflow tracking store", str(tmp_path / "mlruns" / "mlflow.db"))
    assert result.exit_code == 2
    assert started == []
    _no_store_left(tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    experiment = write_experiment(tmp_path, write_csv(tmp_path / "reviews.csv", review_rows(4)))
    result = run_cli(*args, "--experiment", str(experiment), cwd=elsewhere)
    assert_clean_error(result, "no MLflow tracking store")
    assert result.exit_code == 2
    _no_store_left(tmp_path)


def test_promote_where_there_is_no_store_creates_none(tmp_path: Path) -> None:
    experiment = write_experiment(
        tmp_path,
        write_csv(tmp_path / "reviews.csv", review_rows(4)),
        study={"storage": f"sqlite:///{tmp_path}/optuna.sqlite", "n_trials": 1},
        tracking={"uri": f"sqlite:///{tmp_path}/gone/mlflow.db"},
    )
    study = optuna.create_study(
        study_name=yaml.safe_load(experiment.read_text())["name"],
        storage=f"sqlite:///{tmp_path}/optuna.sqlite",
        directions=["maximize", "minimize"],
    )
    attrs = {"mlflow_run_id": "0123456789abcdef", "valid_accuracy": 0.9}
    study.add_trial(optuna.trial.create_trial(values=[0.9, 0.0], user_attrs=attrs))
    result = run_cli("promote", str(experiment), "--trial", "0")
    assert_clean_error(result, "no MLflow tracking store", str(tmp_path / "gone" / "mlflow.db"))
    assert result.exit_code == 2
    assert not (tmp_path / "gone").exists()


def test_serve_passes_its_request_timeout_to_the_server(registry: str, started: list[Any]) -> None:
    # Found by QA: a served SmolLM2 model answered 60 test snippets with a bare 504 Gateway
    # Timeout on a busy 2-core machine (MLflow's 60 s per request), and `harness serve` had no
    # way to give it longer.
    env = {"MLFLOW_TRACKING_URI": registry}
    served = run_cli("serve", NAME, "--port", "5078", "--timeout", "600", env=env)
    assert served.exit_code == 0, served.output
    command = started[0].command
    assert command[command.index("--timeout") + 1] == "600"
    assert run_cli("serve", NAME, "--timeout", "0", env=env).exit_code == 2

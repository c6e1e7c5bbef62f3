"""A study shared by many workers, the parts that need no server: secrets kept out of text, the
driver a plain PostgreSQL URL gets, workers opening one SQLite study at once, the budget reserved
atomically across workers, and `harness ui` over a tracking server.

The same steps against a real PostgreSQL and MLflow server, with worker processes, are in
`test_many_workers.py`.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from harness.config import load_experiment
from harness.locations import redact_text, with_driver
from harness.records import Cost
from harness.sweep.budget import Budget
from harness.sweep.search_space import load_search_space
from harness.sweep.study import ask, open_study
from harness.tracking.runs import redact
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import ROOT, write_experiment

DIST = {"x": optuna.distributions.FloatDistribution(0, 1)}


def test_passwords_and_keys_are_blanked_wherever_they_appear() -> None:
    text = (
        "cannot open 'postgresql://harness:s3cr%40t@db.example:5432/optuna': refused; "
        "tracking at https://me:pw@mlflow.example/ and mysql://u:p@h/db?password=x&ssl=1; "
        "key sk-proj-abcdefghijklmnop"
    )
    shown = redact_text(text)
    for secret in ("s3cr%40t", ":pw@", ":p@", "password=x", "abcdefghijklmnop"):
        assert secret not in shown
    assert "postgresql://harness:***@db.example:5432/optuna" in shown
    assert "https://me:***@mlflow.example/" in shown
    assert redact_text("http://127.0.0.1:5000/#/experiments/1") == (
        "http://127.0.0.1:5000/#/experiments/1"
    )
    config = {"study": {"storage": "postgresql://u:hunter2@h/db"}, "api_key": "x", "seed": 1}
    assert redact(config) == {
        "study": {"storage": "postgresql://u:***@h/db"},
        "api_key": "***",
        "seed": 1,
    }


def test_every_providers_key_in_the_environment_is_blanked_wherever_it_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only OpenAI-shaped keys (sk-...) were blanked: a Together, Azure or Nebius key a provider
    # echoed in an error would have been printed, and stored as a failed trial's reason.
    keys = {
        "TOGETHER_API_KEY": "tgp_v1_Zq8xL2mN4pR7sT9vW1yB3dF5",
        "AZURE_OPENAI_API_KEY": "9f3c2a7e41b84d0c9e6f5a1b2c3d4e5f",
        "NEBIUS_API_KEY": "eyJhbGciOiJSUzI1NiJ9.nebius-secret",
        "PGPASSWORD": "correct-horse-battery",
    }
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HARNESS_HOST", "worker-one")  # not a secret: left alone
    shown = redact_text(f"HTTP 401: invalid key {' and '.join(keys.values())} on worker-one")
    assert not any(value in shown for value in keys.values()) and "worker-one" in shown
    # The CLI's one-line errors go through it too.
    missing = run_cli("estimate", str(tmp_path / f"{keys['TOGETHER_API_KEY']}.yaml"))
    assert_clean_error(missing)
    assert keys["TOGETHER_API_KEY"] not in missing.output


def test_a_plain_postgresql_url_gets_an_installed_driver() -> None:
    url = with_driver("postgresql://u:p@h:5432/db")
    if importlib.util.find_spec("psycopg2") is None:
        assert url == "postgresql+psycopg://u:p@h:5432/db"
    assert with_driver("postgres://u:p@h/db").startswith("postgresql")
    assert with_driver("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert with_driver("sqlite:///mlruns/optuna.db") == "sqlite:///mlruns/optuna.db"


def test_an_unreachable_database_is_one_clean_error_without_its_password(
    tiny_csv: Path, tmp_path: Path
) -> None:
    path = write_experiment(tmp_path, tiny_csv)
    url = "study.storage=postgresql://harness:hunter2@127.0.0.1:1/optuna"
    result = run_cli("trials", str(path), "--set", url)
    assert_clean_error(result)
    result = run_cli("study", "create", str(path), "--set", url)
    assert_clean_error(result, "cannot open", "harness:***@127.0.0.1:1")
    assert "hunter2" not in result.output


@pytest.mark.parametrize("command", [("trials",), ("study", "create"), ("sweep", "--yes")])
def test_a_storage_that_cannot_be_opened_is_named_as_typed(
    tiny_csv: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    # Found walking "Running on several machines": the error named the URL as
    # `postgresql+psycopg://...` (the driver the harness adds, not what the user typed), ended on
    # SQLAlchemy's "(Background on this error at: https://sqlalche.me/...)", and a mistyped
    # scheme read "Can't load plugin: sqlalchemy.dialects:postgressql".
    path = write_experiment(tmp_path, tiny_csv)
    typed = "postgresql://harness:hunter2@127.0.0.1:1/optuna"
    result = run_cli(*command, str(path), "--set", f"study.storage={typed}")
    assert_clean_error(result, "'postgresql://harness:***@127.0.0.1:1/optuna'")
    assert "+psycopg" not in result.stderr and "sqlalche.me" not in result.stderr
    assert "hunter2" not in result.output
    mistyped = "study.storage=postgressql://harness:hunter2@127.0.0.1:1/optuna"
    result = run_cli(*command, str(path), "--set", mistyped)
    assert_clean_error(result, "study.storage", "unknown URL scheme 'postgressql'")
    assert "hunter2" not in result.output and "plugin" not in result.stderr


@pytest.mark.slow
def test_a_database_server_that_never_answers_is_given_up_on(
    tiny_csv: Path, tmp_path: Path
) -> None:
    # Found walking "Running on several machines" with a storage URL whose server accepted the
    # connection and never answered (a hung server, a wrong port): `harness trials` sat silent
    # for more than 200 s (psycopg's own 130 s, per connection the command opens).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nothing ever reads or replies
        port = silent.getsockname()[1]
        path = write_experiment(tmp_path, tiny_csv)
        storage = f"study.storage=postgresql://harness:hunter2@127.0.0.1:{port}/optuna"
        env = {k: v for k, v in os.environ.items() if k != "PGCONNECT_TIMEOUT"}
        env["PYTHONPATH"] = str(ROOT)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "harness", "trials", str(path), "--set", storage],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "study.storage" in done.stderr and "timeout" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    assert took < 60, f"gave up after {took:.0f} s"


def _in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads released together; their results in order."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_workers_opening_one_sqlite_study_together_get_one_study_and_own_streams(
    tiny_csv: Path, tmp_path: Path
) -> None:
    experiment = load_experiment(str(write_experiment(tmp_path, tiny_csv)))
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    handles = _in_threads(3, lambda _: open_study(experiment, space, join=True))
    assert sorted(h.worker for h in handles) == [0, 1, 2]
    assert len({h.study._study_id for h in handles}) == 1
    firsts = [ask(h, space).params["learning_rate_multiplier"] for h in handles]
    assert len(set(firsts)) == 3, "each worker draws from a stream of its own"


def test_reservations_are_atomic_across_workers_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    _assert_reservations_atomic(url, monkeypatch)


def _assert_reservations_atomic(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four workers (each with its own storage connection) reserve $0.40 of $1.00 at the same
    moment, with the ledger read made slow: two get it, two are refused."""
    read = Budget.committed

    def slow_read(self: Budget) -> float:
        value = read(self)
        time.sleep(0.3)  # every worker would read $0 before any of them wrote
        return value

    monkeypatch.setattr(Budget, "committed", slow_read)

    def reserve(_: int) -> str | None:
        study = optuna.load_study(study_name="s", storage=url)
        return Budget(1.0, study).reserve(study.ask(DIST), Cost(usd=0.4))

    refusals = _in_threads(4, reserve)
    assert sum(r is None for r in refusals) == 2, refusals


def test_ui_over_a_tracking_server_points_at_it_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:hunter2@127.0.0.1:1")
    result = run_cli("ui")  # a server that is down: its address is still the answer
    assert result.exit_code == 0, result.output
    assert "MLflow UI: http://user:***@127.0.0.1:1" in result.stdout
    assert "hunter2" not in result.output


def test_ui_over_a_tracking_server_that_is_down_says_so_plainly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found walking `harness ui` with the server stopped: its one warning was MLflow's request
    # error cut at 300 characters, "... Failed " and no reason: nothing said the server was down.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:hunter2@127.0.0.1:1")
    result = run_cli("ui")
    assert result.exit_code == 0, result.output
    warning = result.stderr.strip()
    assert "the tracking server http://user:***@127.0.0.1:1 does not answer" in warning, warning
    assert "refused" in warning and "start it" in warning, warning
    assert "hunter2" not in result.output and "HTTPConnectionPool" not in warning

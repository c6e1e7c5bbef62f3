"""New sqlite tracking stores are copies of a cached, migrated template that MLflow accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from harness.tracking.store import cache_dir, ensure_sqlite_store


def test_a_new_store_is_a_working_copy_of_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    db = tmp_path / "runs" / "mlflow.db"
    uri = f"sqlite:///{db}"

    ensure_sqlite_store(uri)

    assert db.is_file() and list(cache_dir().glob("mlflow-*-empty.db"))
    client = MlflowClient(tracking_uri=uri)  # MLflow checks the schema revision here
    default = client.get_experiment("0")
    assert default.artifact_location == (db.parent / "artifacts" / "0").as_uri()
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}

    # A second store copies the template again; an existing store is never touched.
    other = tmp_path / "other.db"
    ensure_sqlite_store(f"sqlite:///{other}")
    before = db.read_bytes()
    ensure_sqlite_store(uri)
    assert other.is_file() and db.read_bytes() == before


def test_other_stores_are_left_to_mlflow(tmp_path: Path) -> None:
    ensure_sqlite_store("sqlite:///:memory:")
    ensure_sqlite_store(f"file://{tmp_path}/mlruns")
    ensure_sqlite_store("http://127.0.0.1:5000")
    assert list(tmp_path.iterdir()) == []

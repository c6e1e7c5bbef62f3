"""A copied or moved project works on its own: report, promote, predict and trials in the copy
leave the original byte for byte as it was, and write nothing outside the copy."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from harness.tracking.relocate import reroot_store
from tests.cli_runner import run_cli
from tests.conftest import ONE_EPOCH_SPACE, review_rows, write_csv


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, files with their SHA-256."""
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        )
        for path in sorted(root.rglob("*"))
    }


def _project(root: Path) -> None:
    """A project whose experiment names everything relative to it, as a user writes one."""
    root.mkdir()
    write_csv(root / "reviews.csv", review_rows(20))
    (root / "space.yaml").write_text(yaml.safe_dump(ONE_EPOCH_SPACE))
    config = {
        "name": "tiny",
        "seed": 3,
        "dataset": {"source": "reviews.csv", "split": {"validation": 0.2, "test": 0.2}},
        "backend": {"kind": "local", "max_length": 32},
        "search_space": "space.yaml",
        "study": {"n_trials": 1, "sampler": {"kind": "random"}},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.slow
def test_a_moved_copy_of_a_project_works_and_never_touches_the_original(tmp_path: Path) -> None:
    original = tmp_path / "project"
    _project(original)
    assert run_cli("sweep", "tiny.yaml", cwd=original).exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    # The original moves away: any path into it that the copy still used would fail or
    # reappear (MLflow creates the folders it writes to).
    moved = tmp_path / "moved-away"
    original.rename(moved)
    before = _tree(moved)
    around = sorted(p.name for p in tmp_path.iterdir())

    report = run_cli("report", "tiny.yaml", cwd=copy)
    assert report.exit_code == 0, report.output
    promoted = run_cli("promote", "tiny.yaml", cwd=copy)
    assert promoted.exit_code == 0, promoted.output
    # The harness says what it registered; MLflow's own lines are not let through beside it.
    assert "Successfully registered model" not in promoted.stderr, promoted.stderr
    assert "Created version" not in promoted.stderr, promoted.stderr
    predicted = run_cli("predict", "tiny-classifier", "The film is a delight, 7.", cwd=copy)
    assert predicted.exit_code == 0, predicted.output
    assert "positive" in predicted.stdout or "negative" in predicted.stdout
    listed = run_cli("trials", "tiny.yaml", cwd=copy)
    assert listed.exit_code == 0 and "complete" in listed.stdout.lower()

    assert _tree(moved) == before  # the original, byte for byte
    assert not original.exists(), _tree(original)  # nothing recreated where it was
    assert sorted(p.name for p in tmp_path.iterdir()) == around  # nothing beside the copy
    # What the commands wrote is in the copy's store: the report, the promoted model's files.
    assert list((copy / "mlruns" / "reports").rglob("*.html"))
    weights = list((copy / "mlruns" / "artifacts").rglob("model.safetensors"))
    assert weights, "the promoted model's weights are logged into the copy's store"
    with sqlite3.connect(copy / "mlruns" / "mlflow.db") as conn:
        rows = conn.execute("SELECT artifact_uri FROM runs").fetchall()
    assert rows and all(str(copy) in uri and str(original) not in uri for (uri,) in rows)


def test_a_store_opened_where_it_was_made_is_left_alone(tmp_path: Path) -> None:
    from harness.tracking.store import ensure_sqlite_store

    db = tmp_path / "mlruns" / "mlflow.db"
    ensure_sqlite_store(f"sqlite:///{db}")
    data = db.read_bytes()
    assert reroot_store(db) == []
    assert db.read_bytes() == data
    copy = tmp_path / "elsewhere" / "mlruns"
    shutil.copytree(db.parent, copy)
    assert reroot_store(copy / "mlflow.db") == [db.parent.resolve()]
    assert reroot_store(copy / "mlflow.db") == []  # once
    with sqlite3.connect(copy / "mlflow.db") as conn:
        (location,) = conn.execute(
            "SELECT artifact_location FROM experiments WHERE experiment_id = 0"
        ).fetchone()
    assert location == (copy.resolve() / "artifacts" / "0").as_uri()
    assert db.read_bytes() == data

"""A copied or moved project uses its own MLflow store, never the original's.

MLflow records artifact locations as absolute URIs (`create_experiment` resolves a relative one)
in its database: experiments, runs, logged models, model versions. The harness keeps them beside
a sqlite store (`<store folder>/artifacts`, see `store.artifact_root` and
`store._point_default_experiment`), so the folder holding the database is the root of every
file the store refers to, local models under `mlruns/models` included. Copied elsewhere, those
locations would still name the original: a report or a promoted model of the copy would be
written into the original project.

So a store opened from another folder than the one it records is re-rooted first: every text
value under the recorded folder (artifact URIs, and paths such as a model folder in a tag) is
rewritten to the same place under the current folder, in one transaction, before MLflow reads
the database (MLflow's in-process cache of run artifact locations is emptied too). Opening it
again from the same folder finds nothing to do; the original is never opened for writing. Trial
attributes in the study need no rewriting: local model folders are recorded relative to the
project (`record.portable_ref`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

_TEXT = ("CHAR", "TEXT", "CLOB")


def reroot_store(db: Path) -> list[Path]:
    """Re-root the sqlite MLflow store `db` on the folder it is in now.

    Returns:
        The folders it was re-rooted from (empty: it was not moved, or records no harness
        artifact root, or is not an MLflow store).
    """
    here = db.resolve().parent
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            old = [root for root in _recorded_roots(conn) if root != here]
        except sqlite3.Error:
            return []  # not an MLflow store (yet): MLflow creates or rejects it
        if old:
            with conn:  # one transaction: a reader sees the store moved entirely or not at all
                for root in old:
                    _rewrite(conn, root, here)
    if old:
        _forget_artifact_repositories()
    return old


def _forget_artifact_repositories() -> None:
    """MLflow keeps each run's artifact location in a per-process cache keyed by run id alone;
    a copy's runs have the original's ids, so a process that used the original (a test, a
    notebook) would otherwise keep writing there."""
    from mlflow.tracking._tracking_service import utils

    utils._artifact_repos_cache.clear()


def _recorded_roots(conn: sqlite3.Connection) -> set[Path]:
    """The store folders the experiments' artifact locations were made under: `<root>/artifacts`
    for the harness's experiments, `<root>/artifacts/0` for the Default one."""
    roots = set()
    for experiment_id, location in conn.execute(
        "SELECT experiment_id, artifact_location FROM experiments"
    ):
        parsed = urlparse(str(location or ""))
        if parsed.scheme != "file":
            continue
        path = Path(unquote(parsed.path))
        if path.name == "artifacts":
            roots.add(path.parent)
        elif str(experiment_id) == "0" and path.name == "0" and path.parent.name == "artifacts":
            roots.add(path.parent.parent)
    return roots


def _rewrite(conn: sqlite3.Connection, old: Path, new: Path) -> None:
    """Replace the prefix `old/` by `new/` in every text column, as a URI and as a path."""
    prefixes = [(old.as_uri() + "/", new.as_uri() + "/"), (f"{old}/", f"{new}/")]
    tables = [
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_") and name != "alembic_version"
    ]
    for table in tables:
        columns = [
            row[1]
            for row in conn.execute(f'PRAGMA table_info("{table}")')
            if any(kind in str(row[2]).upper() for kind in _TEXT)
        ]
        for column in columns:
            for before, after in prefixes:
                conn.execute(
                    f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                    f'WHERE substr("{column}", 1, ?) = ?',
                    (after, len(before) + 1, len(before), before),
                )

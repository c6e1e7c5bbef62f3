"""New local MLflow stores in milliseconds: copy an empty, fully migrated database.

MLflow creates a sqlite tracking store by running every Alembic migration since its first
release, which takes 3 to 5 seconds on a laptop core: longer than the rest of the tracking of a
whole sweep. The migrated empty database is the same for every store of one MLflow version, so
the harness builds it once per version under the user's cache folder (`$XDG_CACHE_HOME/harness`,
default `~/.cache/harness`) and copies it for each new store. MLflow still checks the copy's
schema revision when it opens it, as for any existing store.

The copy's `Default` experiment (id 0, which MLflow creates with the store) gets the artifact
folder the harness uses beside the database, `<db folder>/artifacts/0`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from harness.config import DEFAULT_TRACKING_URI, Experiment, tracking_uri_problem
from harness.errors import ConfigError
from harness.locations import cache_dir as harness_cache_dir
from harness.locations import with_driver
from harness.tracking.relocate import reroot_store


def cache_dir() -> Path:
    """Where templates live: `$XDG_CACHE_HOME/harness` or `~/.cache/harness`."""
    return harness_cache_dir()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path).expanduser()


def ensure_sqlite_store(uri: str) -> None:
    """Create the sqlite store at `uri` from the cached template if it does not exist yet.

    Anything else (another backend, an existing file, a template that cannot be built or
    copied) is left to MLflow, which then creates or opens the store the slow way.
    """
    db = sqlite_path(uri)
    if db is None or db.exists():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        template = _template()
        _copy_new(template, db)
        _point_default_experiment(db)
    except (OSError, sqlite3.Error, ImportError):
        return  # MLflow builds or repairs it itself


def _template() -> Path:
    """The migrated empty store for the installed MLflow, built on first use."""
    import mlflow

    template = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as tmp:
        built = Path(tmp) / "empty.db"
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = SqlAlchemyStore(f"sqlite:///{built}", Path(tmp).as_uri())
        store.engine.dispose()  # close the pool before the file moves
        os.replace(built, template)  # atomic: a concurrent builder never sees half a file
    return template


def _copy_new(template: Path, db: Path) -> None:
    """Copy `template` to `db` unless `db` appeared meanwhile (another process created it)."""
    fd, tmp = tempfile.mkstemp(dir=db.parent, prefix=f".{db.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(template.read_bytes())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, db)  # fails if it exists: never overwrite someone's store
    finally:
        os.unlink(tmp)


def _point_default_experiment(db: Path) -> None:
    artifacts = (db.resolve().parent / "artifacts" / "0").as_uri()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (artifacts,)
        )


def tracking_uri(experiment: Experiment | None = None) -> str:
    """`MLFLOW_TRACKING_URI` wins, then the experiment's `tracking.uri`, then the sqlite default.

    A database URI gets a driver that is installed (`postgresql://` becomes
    `postgresql+psycopg://` without psycopg2); an `http(s)://` URI is a tracking server. A sqlite
    store that was copied or moved here is re-rooted on its new folder first (see
    `harness.tracking.relocate`), so nothing the caller logs lands in the original.
    """
    uri = _configured_uri(experiment)
    db = sqlite_path(uri)
    if db is not None and db.is_file():
        reroot_store(db)
    return uri


def _configured_uri(experiment: Experiment | None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        problem = tracking_uri_problem(env)
        if problem:  # MLflow would raise deep inside the first call that opens the store
            raise ConfigError(f"MLFLOW_TRACKING_URI={env}: {problem}")
        return with_driver(absolute_sqlite(env))
    if experiment is not None and experiment.config.tracking.uri:
        return with_driver(absolute_sqlite(experiment.config.tracking.uri))
    return absolute_sqlite(DEFAULT_TRACKING_URI)


def is_remote(uri: str) -> bool:
    """Whether `uri` is a tracking server (which serves its own UI) rather than a store."""
    return uri.startswith(("http://", "https://"))


def absolute_sqlite(uri: str) -> str:
    """`sqlite:///mlruns/x.db` relative to the current directory, made absolute.

    MLflow caches stores by URI string, so two relative URIs from two directories in one process
    would otherwise share the first directory's database.
    """
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri.removeprefix("sqlite:///")
        if path != ":memory:" and not path.startswith("/"):
            return "sqlite:///" + str(Path(path).expanduser().resolve())
    return uri


def artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a local sqlite store instead of MLflow's cwd-relative default."""
    db = sqlite_path(uri)
    return (db.resolve().parent / "artifacts").as_uri() if db is not None else None


def ensure_experiment(client: Any, name: str) -> str:
    """The id of MLflow experiment `name` in `client`'s store: created (its artifacts beside a
    local sqlite store) when missing, restored when deleted, adopted when another process
    created it meanwhile.

    Raises:
        MlflowException: The store refused, for another reason than a concurrent creation.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            root = artifact_root(client.tracking_uri)
            return str(client.create_experiment(name, artifact_location=root))
        except MlflowException:
            # RESOURCE_ALREADY_EXISTS: another worker created it meanwhile; adopt it.
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)


def missing_store(uri: str) -> Path | None:
    """The database file of the local sqlite store at `uri` when that file does not exist; None
    when it exists or `uri` is another kind of store (a server or database answers for itself).

    MLflow creates an empty sqlite store (folder and database) on the first read, so a look-up in
    the wrong folder would leave one behind: readers refuse such a store instead of opening it.
    """
    db = sqlite_path(uri)
    return db if db is not None and not db.exists() else None


def open_store(uri: str) -> Any | None:
    """An `MlflowClient` on the store at `uri`; None for a local sqlite store that does not exist
    (never create an empty tracking store just to read from it or to log a report to it)."""
    from mlflow import MlflowClient

    if missing_store(uri) is not None:
        return None
    return MlflowClient(tracking_uri=uri)


# MLflow's words when a tracking server did not answer and its retries ran out
# (`mlflow.utils.rest_utils.http_request`), and the OS's reason inside them.
_NO_ANSWER = re.compile(r"API request to (?P<server>https?://[^/\s]+)\S* failed with exception")
_OS_REASON = re.compile(r"\[Errno -?\d+\] (?P<reason>[^\"')]+)")


def server_unreachable(exc: BaseException) -> str | None:
    """One line for an MLflow error that says its tracking server did not answer (None for any
    other error, which keeps its traceback): the server, and the OS's reason where it gave one."""
    if type(exc).__name__ != "MlflowException":
        return None
    text = str(exc)
    found = _NO_ANSWER.search(text)
    if found is None:
        return None
    reason = _OS_REASON.search(text)
    why = reason["reason"].strip() if reason else "no answer"
    return f"the MLflow tracking server {found['server']} did not answer ({why})"

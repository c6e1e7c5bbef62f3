"""Locks every worker of a study shares, held where the study lives.

Workers on several machines coordinate through the study storage alone. A few steps read the
storage and then write what they read depends on (create the study, adopt or create its MLflow
run, count the trials in flight and ask for one, reserve budget, tag the front); each runs under
a named lock so that two workers never both pass the same check:

- PostgreSQL: a transaction-level advisory lock (`pg_advisory_xact_lock`) on a connection of its
  own, released when the block ends or the worker dies (its connection closes);
- SQLite (one machine): an exclusive `flock` on a file beside the database;
- an in-memory storage (it lives in one process): a lock of that process;
- anything else (a journal file, a proxy to another server): refused with `ConfigError`. A
  storage the harness cannot lock would let two workers pass the budget check together, so it
  is never used without one.

Locks are named per study, so studies sharing a database do not wait on each other. Nested
locks are taken in one order only (`launch`, then `budget`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from harness.errors import ConfigError


def _key(name: str) -> int:
    """A signed 64-bit advisory lock key for `name`."""
    digest = hashlib.blake2b(f"harness:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _sqlite_file(url: sqlalchemy.URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: one worker per SQLite study
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def engine_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock `name` of the database behind `engine` for the block."""
    database = _sqlite_file(engine.url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection, connection.begin():
            lock = sqlalchemy.text("SELECT pg_advisory_xact_lock(CAST(:key AS bigint))")
            connection.execute(lock, {"key": _key(name)})
            yield
    elif database is not None:
        suffix = f"{_key(name) & 0xFFFFFFFF:08x}"
        with _file_lock(database.with_name(f".{database.name}.lock-{suffix}")):
            yield
    else:
        yield


@contextlib.contextmanager
def url_lock(url: str, name: str) -> Iterator[None]:
    """`engine_lock` for a storage that is not open yet (creating it is what the lock guards)."""
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine_lock(engine, name):
            yield
    finally:
        engine.dispose()


_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_GUARD = threading.Lock()


def _process_lock(name: str) -> threading.Lock:
    with _PROCESS_GUARD:
        return _PROCESS_LOCKS.setdefault(name, threading.Lock())


def _storage_of(study: optuna.Study) -> Any:
    storage: Any = study._storage  # Optuna wraps its RDBStorage in a cache layer (`_backend`)
    return getattr(storage, "_backend", storage)


@contextlib.contextmanager
def study_lock(study: optuna.Study, name: str) -> Iterator[None]:
    """Hold the study's lock `name` (see the module docstring) for the block.

    Raises:
        ConfigError: The study's storage is one the harness cannot lock.
    """
    storage, named = _storage_of(study), f"{study.study_name}:{name}"
    if isinstance(storage, optuna.storages.RDBStorage):
        with engine_lock(storage.engine, named):
            yield
    elif isinstance(storage, optuna.storages.InMemoryStorage):
        with _process_lock(f"{id(storage)}:{named}"):
            yield
    else:
        raise ConfigError(
            f"study {study.study_name!r}: the harness cannot lock a {type(storage).__name__} "
            "storage for its budget and launches; use SQLite (one machine) or PostgreSQL "
            "(several) in study.storage"
        )

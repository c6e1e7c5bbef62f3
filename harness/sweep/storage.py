"""Opening a study's RDB storage: its URL, heartbeat settings, and a race-free create.

Workers started together on an empty database would otherwise race in creating the storage's
tables (PostgreSQL answers `pg_type` or `alembic_version` unique violations) and the study; the
caller holds the study's `open` lock (`harness.sweep.locks`) around `create_study`, which also
retries a create that conflicts with a creator outside the harness.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from harness.errors import ConfigError
from harness.locations import redact_text, with_driver

# Defaults; `HARNESS_HEARTBEAT_SECONDS` and `HARNESS_GRACE_SECONDS` override them (whole seconds).
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
CREATE_ATTEMPTS = 5  # creating a study that another process creates at the same moment
WORKERS_JOINED = "workers_joined"  # study user attribute: how many workers have joined

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence what Optuna says about the features used here, only around those calls.

    We run heartbeats ourselves around ask/tell trials (see `study.heartbeat`), which Optuna
    warns about on every `ask`, and its heartbeat and retry features flag themselves as
    experimental.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


def seconds(name: str, default: int) -> int:
    """A whole number of seconds from the environment variable `name`, else `default`."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name}={value!r}: expected a whole number of seconds >= 1")
    return int(value)


def worker_host() -> str:
    """The machine name a worker records on its trials: `HARNESS_HOST`, else the hostname.

    Workers with the same name check each other's pids, so containers that share a hostname
    (but not a process table) must set `HARNESS_HOST` to names of their own.
    """
    return os.environ.get("HARNESS_HOST") or socket.gethostname()


def prepare_storage_url(url: str) -> str:
    """The URL with a driver that is installed; a SQLite file's folder created."""
    url = with_driver(url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        folder = os.path.dirname(os.path.abspath(url.removeprefix("sqlite:///")))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"study.storage: cannot create the folder {folder} for {redact_text(url)} "
                f"({exc.strerror or exc}); point study.storage at a writable path"
            ) from None
    return url


def create_study(
    url: str,
    name: str,
    directions: Sequence[Literal["minimize", "maximize"]],
    sampler: optuna.samplers.BaseSampler,
    on_stale: StaleCallback,
) -> tuple[RDBStorage, optuna.Study]:
    """The storage (tables created if missing) and the study in it (created if missing), with
    heartbeats on and `on_stale` called for each stale trial this worker fails."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with quiet_optuna():
                storage = RDBStorage(
                    url,
                    heartbeat_interval=seconds("HARNESS_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS),
                    grace_period=seconds("HARNESS_GRACE_SECONDS", GRACE_SECONDS),
                    heartbeat_stale_trial_callback=on_stale,
                )
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                sampler=sampler,
                directions=directions,
                load_if_exists=True,
            )
            name_objectives(study)
            return storage, study
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Tables, types or the study created by someone else meanwhile: look again.
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


# What a harness study's objectives measure, by direction (accuracy is maximised, cost minimised).
OBJECTIVE_NAMES = {
    optuna.study.StudyDirection.MAXIMIZE: "valid_accuracy",
    optuna.study.StudyDirection.MINIMIZE: "cost_usd",
}


def name_objectives(study: optuna.Study) -> None:
    """Name a harness study's objectives (`valid_accuracy`, `cost_usd`) where it has no names,
    so that optuna-dashboard and Optuna's own API (`study.metric_names`) label them, instead of
    "Objective 0" and "Objective 1"."""
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental in Optuna
            study.set_metric_names([OBJECTIVE_NAMES[d] for d in study.directions])


def join_study(study: optuna.Study) -> int:
    """Number this worker (0 for the first to join) in the study; call under its `open` lock."""
    number = int(study.user_attrs.get(WORKERS_JOINED, 0))
    study.set_user_attr(WORKERS_JOINED, number + 1)
    return number


def study_exists(url: str, name: str) -> bool:
    """Whether the study is in the storage at `url`, creating nothing where it is not (a SQLite
    file that does not exist is not made). A storage that cannot be read answers True: opening
    the study then says why, as it always has."""
    url = with_driver(url)
    path = url.removeprefix("sqlite:///")
    if url.startswith("sqlite:///") and path != ":memory:" and not os.path.exists(path):
        return False
    try:
        with quiet_optuna():
            return name in optuna.get_all_study_names(storage=url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, ValueError):
        return True

"""Open or resume an Optuna study, turn its trials into TrialSpecs, and read the Pareto front.

The study lives in an RDB storage (SQLite under `mlruns/` by default, any SQLAlchemy URL for many
workers), so running the same command again resumes it. A worker that dies leaves its trial
RUNNING; `recover_crashed_trials` fails it and queues the same parameters again (Optuna's
heartbeat covers other machines, a pid check covers this one without waiting for the grace period)
with its journal, so a retry resumes the trial's paid job instead of paying for another: such a
trial is requeued however often it is killed. A resumed study's sampler is seeded past the trials
it already holds, so a new process does not redraw the configurations an earlier one tried.
"""

from __future__ import annotations

import datetime
import os
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import FrozenTrial, Trial, TrialState

from harness.config import Experiment
from harness.errors import ConfigError
from harness.records import TrialSpec
from harness.sweep.search_space import SearchSpace
from harness.tracking.record import TrialRecord, worker_attrs

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
MAX_RETRIES = 2
DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    "accuracy": "maximize",
    "cost": "minimize",
}


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence what Optuna says about the features used here, only around those calls.

    We run heartbeats ourselves around ask/tell trials (see `heartbeat`), which Optuna warns
    about on every `ask`, and its heartbeat and retry features flag themselves as experimental.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


@dataclass
class StudyHandle:
    """The Optuna study plus the storage it lives in (needed for heartbeats)."""

    study: optuna.Study
    storage: RDBStorage
    objectives: tuple[str, ...]


def _prepare_storage_url(url: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        path = url.removeprefix("sqlite:///")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return url


def make_sampler(
    experiment: Experiment, space: SearchSpace, offset: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with the experiment's seed plus `offset` (the number of
    trials the study already holds: a resumed study draws on, rather than again)."""
    kind, seed = experiment.config.study.sampler.kind, experiment.config.seed + offset
    constraints = _cost_constraint(experiment)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)


def _cost_constraint(experiment: Experiment):  # type: ignore[no-untyped-def]
    limit = experiment.config.study.max_trial_cost_usd
    if limit is None:
        return None

    def constraint(trial: FrozenTrial) -> list[float]:
        # Optuna treats values <= 0 as feasible.
        return [float(TrialRecord.from_attrs(trial.user_attrs).cost_usd or 0.0) - limit]

    return constraint


def open_study(
    experiment: Experiment, space: SearchSpace, storage_url: str | None = None
) -> StudyHandle:
    """Create the study or load it if it exists; refuse to resume with other objectives."""
    url = _prepare_storage_url(storage_url or experiment.config.study.storage)
    try:
        with _quiet_optuna():
            storage = RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=requeue,
            )
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or unreachable server
        raise ConfigError(f"study.storage: cannot open {url!r}: {exc}") from None
    objectives = tuple(experiment.config.study.objectives)
    directions = [DIRECTIONS[o] for o in objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=experiment.study_name,
        storage=storage,
        sampler=make_sampler(experiment, space),
        directions=directions,
        load_if_exists=True,
    )
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise ConfigError(
            f"{experiment.path}: study {experiment.study_name!r} already exists in {url} with "
            f"directions {existing}; set study.name to start a new study with {directions}"
        )
    held = len(study.get_trials(deepcopy=False))
    if held:
        study.sampler = make_sampler(experiment, space, offset=held)
    return StudyHandle(study=study, storage=storage, objectives=objectives)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again, with its journal and its ledger entry.

    A trial with a remote job key may have a paid job: it is requeued however often it was
    killed, so that a retry resumes the job. Other trials are retried `MAX_RETRIES` times.
    Used for crashed workers on this host and as Optuna's stale-heartbeat callback.
    """
    record = TrialRecord.from_attrs(trial.user_attrs)
    history = list(trial.system_attrs.get("retry_history", []))
    if record.job_key is None and len(history) >= MAX_RETRIES:
        return
    first = trial.system_attrs.get("failed_trial", trial.number)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=trial.user_attrs,
            system_attrs={"failed_trial": first, "retry_history": [*history, trial.number]},
        )
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_crashed_trials(handle: StudyHandle) -> list[FrozenTrial]:
    """Fail RUNNING trials whose worker is gone and queue their parameters again.

    Returns the trials that were failed, so the tracker can close their MLflow runs.
    """
    host, now = socket.gethostname(), datetime.datetime.now()
    failed: list[FrozenTrial] = []
    for trial in handle.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        gone = _worker_gone(trial, host, now)
        if gone and handle.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            failed.append(handle.storage.get_trial(trial._trial_id))
            requeue(handle.study, failed[-1])
    before = {t.number for t in handle.study.get_trials(states=(TrialState.FAIL,))}
    with _quiet_optuna():
        fail_stale_trials(handle.study)
    failed += [
        t for t in handle.study.get_trials(states=(TrialState.FAIL,)) if t.number not in before
    ]
    return failed


def _worker_gone(trial: FrozenTrial, host: str, now: datetime.datetime) -> bool:
    """Whether a RUNNING trial's worker is known to be dead without waiting for heartbeats."""
    record = TrialRecord.from_attrs(trial.user_attrs)
    if record.pid is None:
        # Killed between `ask` and `claim`: no heartbeat will ever come to go stale.
        started = trial.datetime_start
        return started is not None and (now - started).total_seconds() > GRACE_SECONDS
    # Same machine, process gone: no need to wait for the heartbeat grace period.
    return record.host == host and not _pid_alive(record.pid)


def claim(handle: StudyHandle, trial: Trial) -> None:
    """Record, right after `ask`, which worker runs the trial, and a first heartbeat: a trial
    whose worker dies at any later moment is then recovered."""
    for key, value in worker_attrs(socket.gethostname(), os.getpid()).items():
        trial.set_user_attr(key, value)
    handle.storage.record_heartbeat(trial._trial_id)


@contextmanager
def heartbeat(handle: StudyHandle, trial: Trial) -> Iterator[None]:
    """Record this worker as alive while a trial runs (Optuna only does this inside optimize()).

    Uses Optuna's public `record_heartbeat`; the trial id is Optuna's private `_trial_id`
    because ask/tell exposes no public one.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            handle.storage.record_heartbeat(trial._trial_id)

    handle.storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def ask(handle: StudyHandle, space: SearchSpace) -> Trial:
    """A new trial with every sampled parameter drawn (or a queued retry's parameters)."""
    with _quiet_optuna():
        return handle.study.ask(fixed_distributions=space.distributions)


def spec_from_trial(trial: Trial, space: SearchSpace, experiment: Experiment) -> TrialSpec:
    """The trial's sampled parameters merged with the fixed ones."""
    values = {**space.fixed, **trial.params}
    return TrialSpec(
        number=trial.number,
        n_epochs=int(values["n_epochs"]),
        learning_rate_multiplier=float(values["learning_rate_multiplier"]),
        batch_size=int(values["batch_size"]),
        base_model=str(values.get("base_model", experiment.config.backend.model)),
        train_examples=int(values["train_examples"]) if "train_examples" in values else None,
        seed=experiment.config.seed + trial.number,
    )


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every completed trial, epoch checkpoints recorded as trials of their own included."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that trained a configuration: what `study.n_trials` counts."""
    return [
        t for t in completed_trials(study) if not TrialRecord.from_attrs(t.user_attrs).is_checkpoint
    ]


def pareto_front(values: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (accuracy, cost) pairs no other pair beats on both, cheapest first.

    A pair is dominated when another is at least as accurate and at most as costly, and strictly
    better on one of the two; equal pairs are both kept, as Optuna does.
    """

    def dominated(i: int) -> bool:
        acc, cost = values[i]
        return any(
            a >= acc and c <= cost and (a > acc or c < cost)
            for j, (a, c) in enumerate(values)
            if j != i
        )

    keep = [i for i in range(len(values)) if not dominated(i)]
    return sorted(keep, key=lambda i: (values[i][1], -values[i][0]))


def pareto_numbers(study: optuna.Study) -> set[int]:
    """Numbers of the trials on the Pareto front of accuracy against cost (the best trial for one
    objective); with a cost constraint, among the trials that meet it, as Optuna's `best_trials`.
    """
    trials = completed_trials(study)
    if not trials:
        return set()
    if len(study.directions) == 1:
        return {study.best_trial.number}
    feasible = [t for t in trials if all(c <= 0.0 for c in t.system_attrs.get("constraints", ()))]
    front = pareto_front([(t.values[0], t.values[1]) for t in feasible])
    return {feasible[i].number for i in front}


def load_existing_study(experiment: Experiment) -> optuna.Study:
    """The experiment's study as stored; ConfigError when it has not been run yet."""
    url = experiment.config.study.storage
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise ConfigError(f"no study storage at {url}: run `harness sweep {experiment.path}` first")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=experiment.study_name, storage=url)
    except KeyError:
        raise ConfigError(
            f"study {experiment.study_name!r} not found in {url}: "
            f"run `harness sweep {experiment.path}` first"
        ) from None

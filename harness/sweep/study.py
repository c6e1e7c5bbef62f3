"""Open or resume an Optuna study, turn its trials into TrialSpecs, and read the Pareto front.

The study lives in an RDB storage (SQLite under `mlruns/` by default, any SQLAlchemy URL for many
workers), so running the same command again resumes it. A worker that dies leaves its trial
RUNNING; `recover_crashed_trials` fails it and queues the same parameters again (Optuna's
heartbeat covers other machines, a pid check covers this one without waiting for the grace period)
with its journal, so a retry resumes the trial's paid job instead of paying for another: such a
trial is requeued however often it is killed. A resumed study's sampler is seeded past the trials
it already holds, so a new process does not redraw the configurations an earlier one tried.

Many workers (processes, machines) share one study: its creation runs under a lock in the
storage (`harness.sweep.locks`), each worker that joins is numbered and its sampler seeded with a
stream of its own, and every worker fails and requeues stale trials on the heartbeat (see
`harness.sweep.shared`). Storage URLs are never printed with their password.
"""

from __future__ import annotations

import datetime
import os
import shlex
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import optuna
import sqlalchemy.exc
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import FrozenTrial, Trial, TrialState

from harness.backends.base import (
    HOSTING_PER_HOUR,
    HOSTING_SINCE,
    SCORING_BILLED,
    SCORING_RESERVED,
    SETTLED_SCORING_USD,
)
from harness.config import Experiment
from harness.errors import ConfigError
from harness.locations import redact_text, storage_problem, with_driver
from harness.records import TrialSpec
from harness.sweep import fidelity
from harness.sweep.grid import GridSearch
from harness.sweep.locks import study_lock, url_lock
from harness.sweep.pareto import pareto_front
from harness.sweep.search_space import SearchSpace
from harness.sweep.storage import (
    GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    create_study,
    join_study,
    prepare_storage_url,
    worker_host,
)
from harness.sweep.storage import quiet_optuna as _quiet_optuna
from harness.tracking.record import (
    EPOCH_LISTS,
    EXPERIMENT_YAML,
    FAILURE_REASON,
    HOST,
    MLFLOW_RUN_ID,
    PID,
    RESERVED_USD,
    SETTLED_USD,
    TrialRecord,
    experiment_attrs,
    failure_attrs,
    journal_key,
    worker_attrs,
)

MAX_RETRIES = 2
WORKER_GONE = "its worker stopped while it ran (killed, crashed or its machine lost)"
WORKER_STRIDE = 1_000_003  # sampler seeds of successive workers lie this far apart
DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    "accuracy": "maximize",
    "cost": "minimize",
}


@dataclass
class StudyHandle:
    """The Optuna study plus the storage it lives in (needed for heartbeats)."""

    study: optuna.Study
    storage: RDBStorage
    objectives: tuple[str, ...]
    worker: int = 0  # this worker's number among those that joined the study
    # Trials this worker failed as stale (heartbeat), for `recover_crashed_trials` to return.
    stale: list[FrozenTrial] = field(default_factory=list)

    @property
    def heartbeat_seconds(self) -> int:
        return self.storage.heartbeat_interval or HEARTBEAT_SECONDS

    @property
    def grace_seconds(self) -> int:
        return self.storage.grace_period or GRACE_SECONDS


def make_sampler(
    experiment: Experiment, space: SearchSpace, offset: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with the experiment's seed plus `offset` (the number of
    trials the study already holds, plus `WORKER_STRIDE` times the worker's number: a resumed
    study draws on, rather than again, and workers sharing a study draw streams of their own)."""
    kind, seed = experiment.config.study.sampler.kind, experiment.config.seed + offset
    constraints = _cost_constraint(experiment)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return GridSearch(space.grid(), seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    tpe = optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    if kind == "fidelity":
        if fidelity.fidelity_values(space.distributions) is None:
            raise ConfigError(
                f"{experiment.path}: study.sampler.kind 'fidelity' searches over the training-set"
                f" size: the search space must sample {fidelity.FIDELITY} among two values or more"
            )
        return fidelity.make_fidelity_sampler(tpe, space.distributions)
    return tpe


def _cost_constraint(experiment: Experiment):  # type: ignore[no-untyped-def]
    limit = experiment.config.study.max_trial_cost_usd
    if limit is None:
        return None

    def constraint(trial: FrozenTrial) -> list[float]:
        # Optuna treats values <= 0 as feasible.
        return [float(TrialRecord.from_attrs(trial.user_attrs).cost_usd or 0.0) - limit]

    return constraint


def open_study(
    experiment: Experiment, space: SearchSpace, storage_url: str | None = None, join: bool = False
) -> StudyHandle:
    """Create the study or load it if it exists; refuse to resume with other objectives.

    Race-free: workers started together on an empty database create the storage's tables and
    the study one at a time (the study's `open` lock), and a create that still conflicts (a
    creator outside the harness) is retried. A worker that `join`s gets a number, and its
    sampler is seeded past the trials held and by that number, so workers draw distinct streams.
    """
    sampler = make_sampler(experiment, space)  # a sampler that cannot work fails before any file
    url = prepare_storage_url(storage_url or experiment.config.study.storage)
    directions = [DIRECTIONS[o] for o in experiment.config.study.objectives]
    stale: list[FrozenTrial] = []

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        stale.append(trial)
        requeue(study, trial)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with url_lock(url, f"{experiment.study_name}:open"):
            name = experiment.study_name
            storage, study = create_study(url, name, directions, sampler, on_stale)
            if EXPERIMENT_YAML not in study.user_attrs:  # new (or older than these attributes)
                for key, value in experiment_attrs(experiment).items():
                    study.set_user_attr(key, value)
            worker = join_study(study) if join else 0
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, ValueError) as exc:
        # SQLAlchemy raises many types for a bad URL or an unreachable server
        typed = redact_text(storage_url or experiment.config.study.storage)  # not the driver's
        raise ConfigError(f"study.storage: cannot open {typed!r}: {storage_problem(exc)}") from None
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise ConfigError(
            f"{experiment.path}: study {experiment.study_name!r} already exists in "
            f"{redact_text(url)} with directions {existing}; set study.name to start a new study "
            f"with {directions}"
        )
    held = len(study.get_trials(deepcopy=False))
    if held or worker:
        study.sampler = make_sampler(experiment, space, offset=held + worker * WORKER_STRIDE)
    objectives = tuple(experiment.config.study.objectives)
    return StudyHandle(study, storage, objectives, worker=worker, stale=stale)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again, with its journal and, where it has a remote job
    key, its ledger entry.

    A trial with a remote job key may have a paid job: it is requeued however often it was
    killed, so that a retry resumes the job, and the two share one ledger entry. Other trials
    are retried `MAX_RETRIES` times; the failed one keeps its reservation (its money may be
    gone) and the retry reserves its own when it starts, so nothing is held while it waits.
    Used for crashed workers on this host, interrupted sweeps and as Optuna's stale-heartbeat
    callback.
    """
    record = TrialRecord.from_attrs(trial.user_attrs)
    history = list(trial.system_attrs.get("retry_history", []))
    if record.job_key is None and len(history) >= MAX_RETRIES:
        return
    first = trial.system_attrs.get("failed_trial", trial.number)
    attrs = dict(trial.user_attrs)
    attrs.pop(FAILURE_REASON, None)  # the failed trial keeps why; the retry has not failed
    # Nor run: until it starts, its predecessor's MLflow run, curves and dead worker are not its
    # own (`harness trials` and optuna-dashboard would show them as the retry's).
    for key in (MLFLOW_RUN_ID, HOST, PID, SETTLED_SCORING_USD, *EPOCH_LISTS):
        attrs.pop(key, None)
    for note in (SCORING_RESERVED, SCORING_BILLED, HOSTING_SINCE, HOSTING_PER_HOUR):
        attrs.pop(journal_key(note), None)  # nor scored yet: it notes its own scoring
    if record.job_key is None:  # no job to resume: no entry to share
        attrs.pop(RESERVED_USD, None)
        attrs.pop(SETTLED_USD, None)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=attrs,
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


def worker_gone(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial is known to run no more: its worker was on this machine and its
    process is gone (killed, crashed). Readers (`harness trials`, `harness studies`) say so
    instead of "running"; the next `harness sweep` fails it and runs its parameters again."""
    if trial.state != TrialState.RUNNING:
        return False
    record = TrialRecord.from_attrs(trial.user_attrs)
    return record.pid is not None and record.host == worker_host() and not _pid_alive(record.pid)


def recover_crashed_trials(handle: StudyHandle) -> list[FrozenTrial]:
    """Fail RUNNING trials whose worker is gone and queue their parameters again.

    Returns the trials this worker failed (when several workers look at once, each trial is
    failed and requeued by one of them), so the tracker can close their MLflow runs. Every
    worker calls it at start and then on the heartbeat, so survivors resume a dead worker's
    trials within the grace period.
    """
    host, now = worker_host(), datetime.datetime.now()
    failed: list[FrozenTrial] = []
    # Under the `launch` lock: between failing a trial and queuing it again it is neither
    # running nor waiting, and a launch counting then would ask one trial too many.
    with study_lock(handle.study, "launch"):
        for trial in handle.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _worker_gone(trial, host, now, handle.grace_seconds) and _fail(handle, trial):
                failed.append(handle.storage.get_trial(trial._trial_id))
                requeue(handle.study, failed[-1])
        with _quiet_optuna():
            fail_stale_trials(handle.study)  # its callback records what it failed in handle.stale
    failed += handle.stale
    handle.stale.clear()
    return failed


def _fail(handle: StudyHandle, trial: FrozenTrial) -> bool:
    """Fail a RUNNING trial whose worker is gone, saying so; False when another worker finished
    or failed it first."""
    try:
        for key, value in failure_attrs(WORKER_GONE).items():
            handle.storage.set_trial_user_attr(trial._trial_id, key, value)
        return handle.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def _worker_gone(trial: FrozenTrial, host: str, now: datetime.datetime, grace: int) -> bool:
    """Whether a RUNNING trial's worker is known to be dead without waiting for heartbeats."""
    record = TrialRecord.from_attrs(trial.user_attrs)
    if record.pid is None:
        # Killed between `ask` and `claim`: no heartbeat will ever come to go stale.
        started = trial.datetime_start
        return started is not None and (now - started).total_seconds() > grace
    # Same machine, process gone: no need to wait for the heartbeat grace period.
    return record.host == host and not _pid_alive(record.pid)


def claim(handle: StudyHandle, trial: Trial) -> None:
    """Record, right after `ask`, which worker runs the trial, and a first heartbeat: a trial
    whose worker dies at any later moment is then recovered."""
    for key, value in worker_attrs(worker_host(), os.getpid()).items():
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
        while not stop.wait(handle.heartbeat_seconds):
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
    """A new trial with every sampled parameter drawn (or a queued retry's parameters).

    The training-set size is drawn last, whatever the file's order: a fidelity sampler prices
    a new configuration's rungs with the values drawn before it."""
    names = sorted(space.distributions, key=lambda name: name == fidelity.FIDELITY)
    with _quiet_optuna():
        return handle.study.ask(fixed_distributions={n: space.distributions[n] for n in names})


def spec_from_trial(
    trial: Trial | FrozenTrial, space: SearchSpace, experiment: Experiment
) -> TrialSpec:
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
        lora_rank=int(values["lora_rank"]) if "lora_rank" in values else None,
        lora_alpha=int(values["lora_alpha"]) if "lora_alpha" in values else None,
        study=experiment.study_name,
    )


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every completed trial, epoch checkpoints recorded as trials of their own included."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that trained a configuration: what `study.n_trials` counts."""
    return [
        t for t in completed_trials(study) if not TrialRecord.from_attrs(t.user_attrs).is_checkpoint
    ]


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


def sweep_command(experiment: Experiment) -> str:
    """The command that runs this experiment's study: its file with its `--set` options, and
    the study's name where the file would name another (a study opened by its name)."""
    items = list(experiment.overrides)
    named = any(item.partition("=")[0].strip() == "study.name" for item in items)
    if not named and experiment.study_name != experiment.name:
        items.append(f"study.name={experiment.study_name}")
    sets = "".join(f" --set {shlex.quote(item)}" for item in items)
    return f"harness sweep {shlex.quote(str(experiment.path))}{redact_text(sets)}"


def load_existing_study(experiment: Experiment) -> optuna.Study:
    """The experiment's study as stored; ConfigError when it has not been run yet."""
    url = with_driver(experiment.config.study.storage)
    shown = redact_text(experiment.config.study.storage)  # as typed, not with the driver
    command = sweep_command(experiment)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise ConfigError(f"no study storage at {shown}: run `{command}` first")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=experiment.study_name, storage=url)
    except KeyError:
        raise ConfigError(
            f"study {experiment.study_name!r} not found in {shown}: run `{command}` first"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise ConfigError(f"study.storage: cannot open {shown!r}: {storage_problem(exc)}") from None

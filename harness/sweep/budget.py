"""The sweep's budget: a ledger of money committed, kept in the study storage.

Every trial reserves its worst case (`reserved_usd`, a user attribute of its Optuna trial) before
it may spend anything, and that reservation counts against `budget_usd` until it is settled:

- a completed trial is settled by its actual cost (`cost_usd`; a checkpoint trial by `spent_usd`,
  what scoring it added);
- a failed trial stays committed at its reservation, unless it is known to have spent nothing (a
  remote trial that never created a job is settled at $0) or its job failed on the provider's
  side, whose job object says what it billed (its journal's `failed_job_billed_usd`: $0 for a
  job that failed validation and trained nothing): it is settled at that, and so is its job;
- trials that share a job key (a killed trial and the retry that resumes its job) share one paid
  job: the group counts once, settled by whichever of them completed, else at its reservation;
  but each run hosts its own deployment (a dedicated endpoint, an Azure deployment) by the hour,
  and one a killed run left bills until it is deleted, and each run scores the job's models
  anew: every member of the group that did not complete, and is not the one counted at its
  reservation, adds the hosting it reserved (`reserved_hosting_usd`), or, once it began
  scoring, the scoring part of its worst case (its journal's `scoring_reserved_usd`);
- a killed run whose hosting the sweep deleted at a known time (`harness.sweep.failures`) counts
  its scoring as billed (`settled_scoring_usd`) instead: beside the job, that is all it spent,
  and, counted alone, its training (as billed, where the provider said) plus that.

Because the ledger lives in the storage, it survives kills and restarts, and a resumed sweep
counts what earlier processes committed. Reservations are made by the sweep's main thread only,
and each reads the ledger and writes its entry under the study's `budget` lock (an advisory lock
in PostgreSQL, a file lock beside SQLite; see `harness.sweep.locks`): workers on other machines
sharing the study never both pass the check with the last dollars.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from harness.backends.base import (
    CREATE_SENT,
    FAILED_JOB_BILLED,
    SCORING_RESERVED,
    SETTLED_SCORING_USD,
)
from harness.errors import BudgetExceeded
from harness.records import Cost, usd
from harness.sweep.estimate import trial_count, worst_case_total
from harness.sweep.locks import study_lock
from harness.tracking.record import (
    TrialRecord,
    journal_key,
    reserve_attrs,
    settle_attrs,
)

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.config import Experiment
    from harness.records import PreparedData
    from harness.sweep.search_space import SearchSpace

# The hosting part of a trial's reservation: the longest life of the deployments it may make.
RESERVED_HOSTING_USD = "reserved_hosting_usd"

# Asked when the sweep's worst case exceeds its budget: (worst-case total, budget) -> go on?
Confirm = Callable[[Cost, float], bool]


def committed_usd(trials: Iterable[FrozenTrial]) -> float:
    """Dollars committed by these trials, a paid job counted once (see the module docstring)."""
    return sum(ledger_usd(trials))


def ledger_usd(trials: Iterable[FrozenTrial]) -> tuple[float, float]:
    """What `committed_usd` adds up, split in two: (spent, reserved). Reserved is the worst case
    held for trials still running (or queued to resume a paid job) and not yet settled; spent is
    the rest, a failed trial's unsettled reservation included (its money may be gone)."""
    entries = ledger_entries(trials).values()
    return sum(u for u, held in entries if not held), sum(u for u, held in entries if held)


def ledger_entries(trials: Iterable[FrozenTrial]) -> dict[int, tuple[float, bool]]:
    """Each trial's entry in the ledger by number: (dollars, held: reserved, not yet spent).

    The trials of one paid job (a killed trial and the retries that resume it) share one entry:
    each that completed counts what it settled; with none completed, the largest reservation
    counts once, on the first trial that holds it, and the others count $0.
    """
    entries: dict[int, tuple[float, bool]] = {}
    groups: dict[str, list[_Member]] = defaultdict(list)
    for trial in trials:
        record = TrialRecord.from_attrs(trial.user_attrs)
        usd = _committed(trial.state, record, trial.user_attrs)
        if record.job_key and not record.is_checkpoint:
            # At most what it committed alone: one settled at $0 created nothing to host.
            hosting = min(usd, _own_spend(trial.user_attrs))
            known = SETTLED_SCORING_USD in trial.user_attrs
            ended = _job_ended(trial.state, record, trial.user_attrs)
            member = _Member(trial.number, trial.state, usd, hosting, known, ended)
            groups[record.job_key].append(member)
        else:
            entries[trial.number] = (usd, _holding(trial.state, record))
    for group in groups.values():
        payers = _payers(group)
        settled = bool(payers)
        live = any(m.state in _LIVE for m in group)
        counted = max(group, key=lambda m: m.usd).number
        for m in group:
            if m.number in payers:
                entries[m.number] = (m.usd, False)
            elif not settled and m.number == counted:
                entries[m.number] = (m.usd, live)
            else:  # the job counted elsewhere; the deployment this run may have left is not
                entries[m.number] = (m.hosting, live and not settled and not m.known)
    return entries


def _payers(group: list[_Member]) -> set[int]:
    """The members that count the group's job as settled: the run that completed it; else one
    that knows its failed job's bill (two may: a signal between the journal's bill and the
    trial's failure copies the note to the retry, which finds the job failed too)."""
    complete = {m.number for m in group if m.state == TrialState.COMPLETE}
    ended = [m for m in group if m.ended]
    return complete or ({max(ended, key=lambda m: m.usd).number} if ended else set())


def _own_spend(attrs: dict[str, Any]) -> float:
    """What a run of a shared job may have paid beside the job: the hosting it reserved, or,
    once it began scoring (journalled), the whole scoring part of its worst case, hosting
    included: every run scores the job's models anew; what its scoring was billed, where known."""
    if SETTLED_SCORING_USD in attrs:
        return float(attrs[SETTLED_SCORING_USD])
    hosting = float(attrs.get(RESERVED_HOSTING_USD) or 0.0)
    scoring = attrs.get(journal_key(SCORING_RESERVED))
    return max(hosting, float(scoring)) if scoring else hosting


@dataclass(frozen=True)
class _Member:
    """A trial of a job group, as the ledger weighs it."""

    number: int
    state: TrialState
    usd: float  # what it committed alone (`_committed`)
    hosting: float  # what it may have paid beside the job (`_own_spend`)
    known: bool = False  # that is what it was billed, not a reservation
    ended: bool = False  # it completed, or knows its failed job's bill: it settles the job


def _job_ended(state: TrialState, record: TrialRecord, attrs: dict[str, Any]) -> bool:
    failed_billed = journal_key(FAILED_JOB_BILLED) in attrs and record.settled_usd is not None
    return state == TrialState.COMPLETE or failed_billed


_LIVE = (TrialState.RUNNING, TrialState.WAITING)


def _holding(state: TrialState, record: TrialRecord) -> bool:
    return state in _LIVE and record.settled_usd is None


def _committed(state: TrialState, record: TrialRecord, attrs: dict[str, Any]) -> float:
    if state == TrialState.COMPLETE:
        return record.spent
    if record.settled_usd is not None:
        return float(record.settled_usd)
    reserved = float(record.reserved_usd or 0.0)
    scoring = attrs.get(journal_key(SCORING_RESERVED))
    if SETTLED_SCORING_USD not in attrs or not scoring:
        return reserved
    # Its training as billed where the provider said, else as reserved; its scoring as billed.
    billed = attrs.get(journal_key("billed_usd"))
    training = float(billed) if billed else reserved - float(scoring)
    return training + float(attrs[SETTLED_SCORING_USD])


@dataclass
class Budget:
    """The ledger of one study, read from its storage every time it is asked."""

    limit: float | None
    study: optuna.Study

    def committed(self) -> float:
        return committed_usd(self.study.get_trials(deepcopy=False))

    def ledger(self) -> tuple[float, float]:
        """(spent, reserved) as `ledger_usd` reads them now; they add up to `committed()`."""
        return ledger_usd(self.study.get_trials(deepcopy=False))

    def reserve(self, trial: Trial, estimate: Cost) -> str | None:
        """Reserve `estimate` for a trial; return why not when it would break the budget.

        Atomic across workers: the ledger is read and the reservation written under the study's
        `budget` lock."""
        with study_lock(self.study, "budget"):
            short = self.shortfall(estimate)
            if short is not None:
                return short
            for key, value in reserve_attrs(estimate.usd).items():
                trial.set_user_attr(key, value)
            if estimate.hosting_usd:
                trial.set_user_attr(RESERVED_HOSTING_USD, estimate.hosting_usd)
        return None

    def shortfall(self, estimate: Cost, what: str = "this trial") -> str | None:
        """Why `estimate` does not fit in what is left of the budget (None: it fits)."""
        if self.limit is None:
            return None
        committed = self.committed()
        if committed + estimate.usd <= self.limit:
            return None
        return (
            f"budget: {usd(committed)} committed of {usd(self.limit)} (spent, or reserved by "
            f"trials not settled); {what} could cost up to {usd(estimate.usd)}, so no more "
            # A study keeps the experiment it was made with: an edited file's budget_usd is not
            # read on resume, so say what is.
            "trials start (to go on, run it again with `--set budget_usd=AMOUNT`)"
        )

    def settle_failed(self, trial: Trial, bills_jobs: bool = False) -> None:
        """A failing trial (still RUNNING): settle it at $0 when it is known to have spent
        nothing (a remote trial that never created its job: no job id, no create request sent,
        and a key noted or, where the backend `bills_jobs`, none), or at what its failed job
        billed where the provider said (`FAILED_JOB_BILLED`); else its reservation stands (a
        create whose reply was lost may have made a job the listing did not show)."""
        record = TrialRecord.from_attrs(trial.user_attrs)
        billed = trial.user_attrs.get(journal_key(FAILED_JOB_BILLED))
        if record.job_id is not None and billed is not None:  # its job failed: billed that
            for key, value in settle_attrs(float(billed)).items():
                trial.set_user_attr(key, value)
            return
        sent = trial.user_attrs.get(journal_key(CREATE_SENT))
        if record.job_id is None and not sent and (record.job_key is not None or bills_jobs):
            for key, value in settle_attrs(0.0).items():
                trial.set_user_attr(key, value)


def check_worst_case(
    experiment: Experiment,
    backend: Backend,
    data: PreparedData,
    space: SearchSpace,
    budget: Budget | None,
    remaining: int,
    confirm: Confirm | None,
) -> None:
    """Ask before a sweep whose worst case could exceed the budget (the budget stays a hard cap
    either way: no trial starts without its worst case reserved). `budget` None: the study does
    not exist yet, so nothing is committed."""
    limit = experiment.config.budget_usd
    if limit is None or remaining <= 0:
        return
    committed = budget.committed() if budget is not None else 0.0
    n_trials = trial_count(experiment, space)
    if n_trials < experiment.config.study.n_trials:  # a grid: no more trials than it holds
        remaining = min(remaining, n_trials)
    per_trial = worst_case_total(experiment, backend, data, space).usd / n_trials
    worst = Cost(usd=committed + per_trial * remaining)
    if worst.usd <= limit or (confirm is not None and confirm(worst, limit)):
        return
    raise BudgetExceeded(
        f"{experiment.path}: the worst case of {remaining} more "
        f"{'trial' if remaining == 1 else 'trials'} plus {usd(committed)} already committed is "
        f"{usd(worst.usd)}, over budget_usd {usd(limit)}; run "
        "`harness estimate` to see why, lower study.n_trials, or pass --yes to run until the "
        "budget is used up"
    )

"""How a sweep fails a trial: cut short by Ctrl-C or a signal, raised, or refused.

A failed trial is told FAIL, settled in the budget ledger (`Budget.settle_failed`; see
`harness.sweep.budget`) and its MLflow run closed; an interrupted one is queued again, so the
next sweep runs it first and a hosted one resumes its job.

An interrupted trial may hold hosting billed by the minute (a Together dedicated endpoint
scoring its model). The sweep deletes it at once, and where the backend journalled since when it
bills and at what rate (`HOSTING_SINCE`, `HOSTING_PER_HOUR`, `SCORING_BILLED`), the run's scoring
is settled at what it was billed (`SETTLED_SCORING_USD`), rounded up to the started minute;
where the delete failed or the time is unknown, the run keeps the scoring it reserved.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future

from optuna.trial import TrialState

from harness.backends.base import (
    HOSTING_PER_HOUR,
    HOSTING_SINCE,
    SCORING_BILLED,
    SETTLED_SCORING_USD,
)
from harness.errors import HarnessError
from harness.records import TrialResult
from harness.sweep.orphans import held_hosting
from harness.sweep.running import Launched, Sweep
from harness.sweep.study import requeue
from harness.sweep.trial import set_attrs
from harness.tracking.record import (
    TrialRecord,
    failure_attrs,
    journal_key,
    settle_attrs,
)
from harness.tracking.store import server_unreachable


def abandon(sweep: Sweep, running: dict[Future[TrialResult], Launched]) -> None:
    """Interrupted: fail the trials in flight (runs KILLED), queue them again to resume jobs."""
    for launched in running.values():
        interrupted(sweep, launched)


def interrupted(sweep: Sweep, launched: Launched, trained: bool = True) -> None:
    """Fail a trial cut short by Ctrl-C or a signal (run KILLED) and queue its parameters again,
    so the next sweep runs it first (a hosted one resumes its job), as when a worker dies.

    `trained` False: it never reached the pool, so a trial without a remote job key trained
    nothing and is settled at $0, as `admission.interrupted_before_start` settles one; a job
    key's paid job may exist (a retry resumes it), so `Budget.settle_failed` decides those."""
    _settle_untrained(launched, trained)
    if trained:
        release_hosting(sweep, launched)
    fail(sweep, launched, "interrupted", status="KILLED", again=True)


def release_hosting(sweep: Sweep, launched: Launched) -> None:
    """Delete the hosting an interrupted trial holds (see the module docstring) and, where its
    journal says since when and at what rate it billed, settle the run's scoring at that."""
    backend, study = sweep.backend, sweep.handle.study
    attrs = launched.trial.user_attrs
    notes = backend.capabilities.hosting_notes
    live = {n for note in notes for n in str(attrs.get(journal_key(note)) or "").split()}
    if not live or not backend.capabilities.deploys_models:
        return
    try:
        deleted = backend.release_deployments(study.study_name, held_hosting(study, backend) - live)
    except HarnessError as exc:
        sweep.view.message(f"{launched.spec.run_name()}: could not delete its hosting ({exc})")
        return
    since, rate = attrs.get(journal_key(HOSTING_SINCE)), attrs.get(journal_key(HOSTING_PER_HOUR))
    if not live <= set(deleted) or not since or not rate:
        return  # not known gone, or not when: the scoring reserved stays committed
    minutes = max(1, math.ceil((time.time() - float(since)) / 60))
    billed = float(attrs.get(journal_key(SCORING_BILLED)) or 0.0) + float(rate) * minutes / 60
    set_attrs(launched.trial, {SETTLED_SCORING_USD: billed})
    sweep.view.message(
        f"{launched.spec.run_name()}: deleted {', '.join(sorted(live))} ({minutes} started "
        f"minute(s)); its scoring was billed ${billed:.4f}"
    )


def _settle_untrained(launched: Launched, trained: bool) -> None:
    if not trained and TrialRecord.from_attrs(launched.trial.user_attrs).job_key is None:
        set_attrs(launched.trial, settle_attrs(0.0))


def fail_raised(sweep: Sweep, launched: Launched, exc: BaseException, trained: bool = True) -> None:
    """Fail a trial whose run raised `exc` (or, the tracking server gone, was in flight beside
    one that did; `trained` as for `interrupted`). A tracking server that stopped answering is
    no fault of the trial: it is queued again, as an interrupted one is, and its run is left for
    the next start to close with this reason (a call to the dead server would only wait minutes
    more)."""
    _settle_untrained(launched, trained)
    outage = server_unreachable(exc)
    if outage is None:
        fail(sweep, launched, f"{type(exc).__name__}: {exc}")
    else:
        fail(sweep, launched, outage, again=True, tracked=False)


def fail(
    sweep: Sweep,
    launched: Launched,
    reason: str,
    status: str = "FAILED",
    announce: bool = True,
    again: bool = False,
    tracked: bool = True,
) -> None:
    """Fail the trial in the study, settle it, close its run; `again`: queue its parameters
    again (before the run is closed, which a gone tracking server fails)."""
    set_attrs(launched.trial, failure_attrs(reason))
    sweep.budget.settle_failed(launched.trial, sweep.backend.capabilities.bills_jobs)
    sweep.handle.study.tell(launched.trial, state=TrialState.FAIL)
    if again:
        requeue(sweep.handle.study, sweep.handle.storage.get_trial(launched.trial._trial_id))
    if tracked:
        sweep.tracker.fail_trial(launched.run_id, reason, status)
    sweep.outcome.failures.append((launched.spec, reason))
    if announce:
        sweep.view.trial_failed(launched.spec, reason)
    sweep.live.failed(launched.spec)

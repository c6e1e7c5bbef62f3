"""The budget ledger: what it counts as committed, from a real (in-memory) Optuna storage."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from harness.backends.base import MemoryJournal
from harness.records import Cost
from harness.sweep.budget import Budget, committed_usd

DIST = {"x": optuna.distributions.FloatDistribution(0, 1)}


def _study() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"])


def _add(study: optuna.Study, state: TrialState, **attrs: Any) -> None:
    values = [0.8, float(attrs.get("cost_usd", 0.0))] if state == TrialState.COMPLETE else None
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.5}, distributions=DIST, values=values, user_attrs=attrs, state=state
        )
    )


def test_a_checkpoint_trial_counts_for_its_scoring_only() -> None:
    study = _study()
    _add(study, TrialState.COMPLETE, cost_usd=1.0)
    _add(study, TrialState.COMPLETE, cost_usd=0.6, spent_usd=0.1, checkpoint_of=0)
    assert Budget(2.0, study).committed() == pytest.approx(1.1)


def test_a_failed_trial_stays_committed_at_its_reservation() -> None:
    study = _study()
    _add(study, TrialState.FAIL, reserved_usd=0.4)  # a killed local trial: what it used is unknown
    _add(study, TrialState.FAIL, reserved_usd=0.3, settled_usd=0.0)  # known to have spent nothing
    assert Budget(2.0, study).committed() == pytest.approx(0.4)


def test_a_killed_trials_hosting_counts_beside_the_job_its_retry_settled() -> None:
    # Found on Together's fake with a dedicated endpoint: a trial killed while its endpoint
    # started, then resumed by a retry that completed. The endpoint the killed run left billed
    # $0.05 until the next start deleted it, but the ledger counted only the retry's $0.0505,
    # so every kill could spend past budget_usd by up to max_minutes of hosting.
    study = _study()
    job = {"journal.job_key": "k1", "journal.job_id": "ft-1"}
    killed = study.ask(DIST)
    for key, value in job.items():
        killed.set_user_attr(key, value)
    worst = Cost(usd=0.5, hosting_usd=0.25, hosting_hours=0.5)  # the endpoint's longest life
    assert Budget(2.0, study).reserve(killed, worst) is None
    study.tell(killed, state=TrialState.FAIL)
    attrs = study.trials[0].user_attrs
    _add(study, TrialState.WAITING, **attrs)  # its retry: the same job, a copy of the entry
    # Waiting: the job once, plus each run's endpoint (the killed one's and the retry's own).
    assert committed_usd(study.get_trials()) == pytest.approx(0.5 + 0.25)
    _add(study, TrialState.COMPLETE, **{**attrs, "cost_usd": 0.3})  # the retry, billed
    trials = [t for t in study.get_trials() if t.state != TrialState.WAITING]
    assert committed_usd(trials) == pytest.approx(0.3 + 0.25)
    # A killed run known to have spent nothing (settled at $0: no job, so no endpoint) adds none.
    _add(study, TrialState.FAIL, **{**attrs, "settled_usd": 0.0})
    trials = [t for t in study.get_trials() if t.state != TrialState.WAITING]
    assert committed_usd(trials) == pytest.approx(0.3 + 0.25)
    # Without hosting (no endpoint reserved) the retry's cost settles the job alone, as before.
    plain = _study()
    _add(plain, TrialState.FAIL, reserved_usd=0.5, **job)
    _add(plain, TrialState.COMPLETE, reserved_usd=0.5, cost_usd=0.3, **job)
    assert committed_usd(plain.get_trials()) == pytest.approx(0.3)


def test_a_killed_trial_and_the_retry_that_resumed_its_job_count_once() -> None:
    study = _study()
    job = {"journal.job_key": "k1", "journal.job_id": "ftjob-1"}
    _add(study, TrialState.FAIL, reserved_usd=0.5, **job)  # killed while its job ran
    _add(study, TrialState.FAIL, reserved_usd=0.5, **job)  # killed again
    trials = study.get_trials()
    assert committed_usd(trials) == pytest.approx(0.5)  # one job, still unsettled
    _add(study, TrialState.COMPLETE, reserved_usd=0.5, cost_usd=0.2, **job)  # resumed, billed
    assert committed_usd(study.get_trials()) == pytest.approx(0.2)
    _add(study, TrialState.FAIL, reserved_usd=0.7, **{"journal.job_key": "k2"})
    assert committed_usd(study.get_trials()) == pytest.approx(0.9)


def test_a_reservation_is_refused_when_it_would_break_the_budget() -> None:
    study = _study()
    _add(study, TrialState.FAIL, reserved_usd=0.6)
    budget = Budget(1.0, study)
    first = study.ask(DIST)
    assert budget.reserve(first, Cost(usd=0.3)) is None
    assert first.user_attrs["reserved_usd"] == 0.3
    second = study.ask(DIST)
    reason = budget.reserve(second, Cost(usd=0.2))
    assert reason is not None and "$0.90 committed of $1.00" in reason
    assert "reserved_usd" not in study.trials[second.number].user_attrs


def test_a_failing_remote_trial_without_a_job_is_settled_at_zero() -> None:
    study = _study()
    budget = Budget(1.0, study)
    no_job = study.ask(DIST)
    budget.reserve(no_job, Cost(usd=0.4))
    no_job.set_user_attr("journal.job_key", "k3")
    budget.settle_failed(no_job)
    with_job = study.ask(DIST)
    budget.reserve(with_job, Cost(usd=0.4))
    with_job.set_user_attr("journal.job_key", "k4")
    with_job.set_user_attr("journal.job_id", "ftjob-4")
    budget.settle_failed(with_job)
    for trial in (no_job, with_job):
        study.tell(trial, state=TrialState.FAIL)
    assert budget.committed() == pytest.approx(0.4)


def test_a_create_whose_reply_was_lost_keeps_its_reservation() -> None:
    # Every create attempt failed with a transient error (a 500 or a dropped connection after
    # the server may have committed) and no listing found the job by its key: a job may exist
    # and bill, so the trial is not settled at $0 (it was, and the budget lost the job's cost).
    from harness.backends.base import MemoryJournal
    from harness.backends.hosted._job_keys import Retry, create_once

    journal = MemoryJournal({"job_key": "k5"})

    def create() -> str:
        raise TimeoutError("the reply was lost")

    with pytest.raises(TimeoutError):
        create_once(create, lambda: None, journal, (TimeoutError,), Retry(1, 0, 0), lambda s: None)
    study = _study()
    budget = Budget(1.0, study)
    sent = study.ask(DIST)
    budget.reserve(sent, Cost(usd=0.4))
    for key, value in journal.notes.items():
        sent.set_user_attr(f"journal.{key}", value)
    budget.settle_failed(sent, bills_jobs=True)
    study.tell(sent, state=TrialState.FAIL)
    assert budget.committed() == pytest.approx(0.4)


def test_a_killed_run_that_began_scoring_counts_its_scoring_beside_the_retrys_job() -> None:
    # A hosted trial killed while it scored its checkpoints (or its test set) had paid for those
    # requests; its retry resumes the job but scores everything again, paying anew. The ledger
    # counted only the retry's cost, so each such kill could spend past budget_usd by up to the
    # scoring part of a trial. A run that began scoring journals that part of its reservation
    # (`scoring_reserved_usd`), and counts it beside the job once another run settles the job.
    study = _study()
    job = {"journal.job_key": "k1", "journal.job_id": "ftjob-1", "reserved_usd": 0.5}
    _add(study, TrialState.FAIL, **job, **{"journal.scoring_reserved_usd": "0.04"})
    _add(study, TrialState.FAIL, **job)  # killed again, while waiting: it scored nothing
    _add(study, TrialState.COMPLETE, **job, cost_usd=0.3)  # the retry, scored anew and billed
    assert committed_usd(study.get_trials()) == pytest.approx(0.3 + 0.04)


def test_a_hosted_trial_journals_its_scoring_reservation_before_it_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.test_together_quote import KEY, SPEC, backend_for, tiny_data
    from tests.together_fake import FakeTogether

    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    with FakeTogether(job_duration=0.2) as server:
        data = tiny_data()
        backend = backend_for(server)
        journal = MemoryJournal()
        backend.fine_tune(SPEC, data, lambda epoch: False, journal)
    reserved = backend.estimate(SPEC, data).evaluation.usd
    assert float(journal.notes["scoring_reserved_usd"]) == pytest.approx(reserved, rel=1e-5)


def test_a_failed_jobs_bill_counts_once_when_two_runs_of_it_recorded_it() -> None:
    # Left by the ledger change that settles a failed job at its bill: a signal between the
    # journal's `failed_job_billed_usd` and the trial's failure copied the note to the retry,
    # which resumed the job, found it failed and settled at the bill too: both runs "ended" the
    # job, and the ledger counted its $0.2 twice.
    study = _study()
    job = {"journal.job_key": "k1", "journal.job_id": "ftjob-1", "reserved_usd": 0.5}
    billed = {"journal.failed_job_billed_usd": "0.200000", "settled_usd": 0.2}
    _add(study, TrialState.FAIL, **job, **billed)  # killed after the bill was journalled
    _add(study, TrialState.FAIL, **job, **billed)  # its retry: the same failed job
    assert committed_usd(study.get_trials()) == pytest.approx(0.2)

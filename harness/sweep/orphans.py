"""Paid jobs no trial owns: found on the provider by the study's name, and reported with cost.

A trial records its job id before waiting on the job, and a killed trial is requeued until its
job is resumed, so a job this harness creates always has a trial. One can still be orphaned: a
job created by hand or by an older harness under the study's name, or a study's storage lost
while its jobs ran. The sweep cannot know which trial such a job was for, so it reports the job
and what it was billed, and leaves the choice to the user (`harness evaluate --model MODEL`
scores a succeeded one without paying for training again).
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from harness.backends.base import Backend, RemoteJob
from harness.errors import HarnessError
from harness.tracking.record import TrialRecord, journal_key


def orphaned_jobs(study: optuna.Study, backend: Backend) -> list[RemoteJob]:
    """The provider's jobs for this study that no trial of the study recorded."""
    jobs = backend.remote_jobs(study.study_name)
    if not jobs:
        return []
    records = [TrialRecord.from_attrs(t.user_attrs) for t in study.get_trials(deepcopy=False)]
    owned = {record.job_id for record in records} | held_hosting(study, backend)  # + in use
    # A trial killed between creating its job and recording the id owns it by its key (its
    # retry finds the job by that key): no orphan.
    keys = [record.job_key for record in records if record.job_key]
    return [
        job for job in jobs if job.id not in owned and not any(job.owned_by(key) for key in keys)
    ]


def held_hosting(study: optuna.Study, backend: Backend) -> set[str]:
    """Deployments (Azure) and dedicated endpoints (Together) that running trials hold: each
    notes its own in its journal, under the backend's `capabilities.hosting_notes`, before
    creating one."""
    return {
        name
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for note in backend.capabilities.hosting_notes
        for name in str(trial.user_attrs.get(journal_key(note)) or "").split()
    }


def orphans_message(study_name: str, jobs: list[RemoteJob]) -> str:
    """One paragraph naming every orphaned job, its state, model and billed cost."""
    parts = []
    for job in jobs:
        billed = f"${job.cost.usd:.4f} billed" if job.cost is not None else "not billed yet"
        model = f" -> {job.model}" if job.model else ""
        parts.append(f"{job.id} ({job.status}{model}, {billed})")
    total = sum(job.cost.usd for job in jobs if job.cost is not None)
    # The provider's own name for a model (`ft:...` on OpenAI, `org/Model-suffix` on Together).
    named = [job.model for job in jobs if job.model]
    hint = (
        f"`harness evaluate EXPERIMENT --model {named[0]}` scores it once it has succeeded"
        if len(named) == 1
        else "`harness evaluate EXPERIMENT --model MODEL` (a name after ->) scores a succeeded one"
    )
    return (
        f"{len(jobs)} fine-tuning job(s) of study {study_name!r} on the provider belong to no "
        f"trial (${total:.4f} billed in all): {'; '.join(parts)}. They are not counted in this "
        f"study's budget; {hint}."
    )


def release_deployments(study: optuna.Study, backend: Backend) -> str | None:
    """Delete the study's model deployments (Azure) or dedicated endpoints (Together) that no
    running trial holds, so none bills
    by the hour after a killed sweep; a line saying what was deleted, or why nothing could be
    (None when there was nothing to do). A running trial notes its own in its journal."""
    if not backend.capabilities.deploys_models:
        return None
    try:
        deleted = backend.release_deployments(study.study_name, held_hosting(study, backend))
    except HarnessError as exc:
        return (
            f"could not check study {study.study_name!r} for leftover model deployments ({exc}); "
            "a deployment bills by the hour while it exists: delete any left in the provider's "
            "console"
        )
    if not deleted:
        return None
    return (
        f"deleted {len(deleted)} model deployment(s) of study {study.study_name!r} that no "
        f"running trial held (left by a killed sweep or a delete that failed; hosting bills "
        f"while it exists): "
        f"{', '.join(deleted)}"
    )

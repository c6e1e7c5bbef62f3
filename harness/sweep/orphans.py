"""Paid jobs no trial owns: found on the provider by the study's name, and reported with cost.

A trial records its job id before waiting on the job, and a killed trial is requeued until its
job is resumed, so a job this harness creates always has a trial. One can still be orphaned: a
job created by hand or by an older harness under the study's name, or a study's storage lost
while its jobs ran. The sweep cannot know which trial such a job was for, so it reports the job
and what it was billed, and leaves the choice to the user (`harness evaluate --model ft:...`
scores a succeeded one without paying for training again).
"""

from __future__ import annotations

import optuna

from harness.backends.base import Backend, RemoteJob
from harness.tracking.record import TrialRecord


def orphaned_jobs(study: optuna.Study, backend: Backend) -> list[RemoteJob]:
    """The provider's jobs for this study that no trial of the study recorded."""
    jobs = backend.remote_jobs(study.study_name)
    if not jobs:
        return []
    owned = {TrialRecord.from_attrs(t.user_attrs).job_id for t in study.get_trials(deepcopy=False)}
    return [job for job in jobs if job.id not in owned]


def orphans_message(study_name: str, jobs: list[RemoteJob]) -> str:
    """One paragraph naming every orphaned job, its state, model and billed cost."""
    parts = []
    for job in jobs:
        billed = f"${job.cost.usd:.4f} billed" if job.cost is not None else "not billed yet"
        model = f" -> {job.model}" if job.model else ""
        parts.append(f"{job.id} ({job.status}{model}, {billed})")
    total = sum(job.cost.usd for job in jobs if job.cost is not None)
    return (
        f"{len(jobs)} fine-tuning job(s) of study {study_name!r} on the provider belong to no "
        f"trial (${total:.4f} billed in all): {'; '.join(parts)}. They are not counted in this "
        "study's budget; `harness evaluate EXPERIMENT --model ft:...` scores a succeeded one."
    )

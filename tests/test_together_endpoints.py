"""Scoring on Together dedicated endpoints (`backend.serving: {kind: dedicated, ...}`).

The fake serves fine-tuned models only through endpoints here (`serverless_lora = False`), so a
model scored at all was scored on one. Checked: every endpoint made is deleted, also when it
fails to start or scoring outruns `max_minutes`; a create whose reply was lost is found, not
paid twice; an endpoint a killed run left is deleted first; the hosting minutes are in the
scoring cost and within the estimate; a whole sweep, and a `harness sweep` killed while an
endpoint scores then resumed. Every figure is synthetic.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness.backends.base import MemoryJournal
from harness.backends.together._endpoints import TogetherEndpoints
from harness.backends.together.backend import TogetherBackend
from harness.config import load_experiment
from harness.errors import BackendError
from harness.records import Cost, PreparedData, TrainedModel, TrialSpec
from harness.sweep.budget import committed_usd, ledger_entries, ledger_usd
from harness.sweep.loop import run_sweep
from harness.tracking.record import TrialRecord
from tests.backend_contract import BackendCase, BackendContract, not_reads
from tests.cli_runner import assert_clean_error, run_cli
from tests.test_openai_sweep import RecordingView
from tests.test_providers import (
    PRICE,
    PRICE_NOTE,
    TOGETHER_LLAMA,
    Provider,
    _assert_each_job_paid_once,
    _experiment,
    _study,
    _sweep_process,
)
from tests.test_together_quote import KEY, MODEL, backend_for, oracle, tiny_data
from tests.together_fake import FakeTogether

HARDWARE = "1x_nvidia_h100_80gb_sxm"
PER_HOUR = 3.0  # test figure: dollars per hour of the endpoint's hardware
DEDICATED = {"kind": "dedicated", "hardware": HARDWARE, "max_minutes": 5}
SPEC = TrialSpec(4, 2, 1.0, 4, MODEL, seed=7)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTogether]:
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    with FakeTogether(job_duration=0.2) as fake:
        fake.state.serverless_lora = False
        fake.state.endpoint_start = 0.15
        yield fake


def dedicated(server: FakeTogether) -> TogetherBackend:
    return backend_for(server, serving=DEDICATED, price={"hosting_per_hour": PER_HOUR})


def trained_on(
    server: FakeTogether, study: str = "ded"
) -> tuple[PreparedData, TogetherBackend, TrainedModel]:
    """A dedicated backend and a model it trained (and scored) for `study` on tiny data."""
    data = tiny_data()
    server.state.oracle = oracle(data)
    backend = dedicated(server)
    journal = MemoryJournal({"study_name": study})
    return data, backend, backend.fine_tune(SPEC, data, lambda epoch: False, journal)


def test_each_model_is_scored_on_its_own_endpoint_which_is_deleted_and_billed_by_the_minute(
    server: FakeTogether,
) -> None:
    data = tiny_data()
    server.state.oracle = oracle(data)
    backend = dedicated(server)
    journal = MemoryJournal({"study_name": "ded"})
    trained = backend.fine_tune(SPEC, data, lambda epoch: False, journal)
    predictions, test_cost = backend.predict(trained.model_ref, data.test.texts, data.labels)

    endpoints = list(server.state.endpoints.values())
    assert len(endpoints) == SPEC.n_epochs  # a checkpoint and the final model, one each
    assert not server.state.live_endpoints() and journal.notes["endpoint_id"] == ""
    served = {e.request["model"] for e in endpoints}
    assert served == {e.checkpoint for e in trained.epochs}
    for endpoint in endpoints:
        assert endpoint.request["autoscaling"] == {"min_replicas": 1, "max_replicas": 1}
        assert endpoint.request["display_name"].endswith("-t004")
    assert sum(p.label == y for p, y in zip(predictions, data.test.labels, strict=True)) == 8
    # Each endpoint's hosting is its model's test scoring cost, counted once, by `predict`
    # (a checkpoint's when the sweep scores it as a trial of its own), never in training.
    minute = PER_HOUR / 60
    assert test_cost.hosting_hours == pytest.approx(1 / 60)
    assert test_cost.usd == test_cost.hosting_usd == pytest.approx(minute)
    assert trained.train_cost.hosting_usd == 0.0
    (checkpoint,) = [e.checkpoint for e in trained.epochs if e.checkpoint != trained.model_ref]
    assert checkpoint is not None
    checkpoint_cost = backend.predict(checkpoint, data.test.texts, data.labels)[1]
    assert checkpoint_cost.hosting_usd == pytest.approx(minute)
    assert backend.predict(trained.model_ref, data.test.texts, data.labels)[1] == Cost()
    assert backend.predict(checkpoint, data.test.texts, data.labels)[1] == Cost()
    hosting = checkpoint_cost.hosting_hours + test_cost.hosting_hours
    assert hosting * 60 == pytest.approx(server.state.billed_minutes())
    estimate = backend.estimate(SPEC, data)
    assert trained.train_cost.usd + test_cost.usd + checkpoint_cost.usd <= estimate.total.usd
    lost = 10  # inactive_timeout's default: how long a lost endpoint bills after the harness
    assert (
        estimate.evaluation.hosting_hours == (SPEC.n_epochs * DEDICATED["max_minutes"] + lost) / 60
    )


def test_the_reservation_covers_an_endpoint_lost_at_its_last_minute_until_together_stops_it(
    server: FakeTogether,
) -> None:
    # A run killed just before its deadline (`max_minutes` - 1 after the create) leaves its
    # endpoint billing until Together stops it, `inactive_timeout` later, when no resume deletes
    # it first: a one-model trial reserving only `max_minutes` could overspend its budget.
    data = tiny_data()
    backend = dedicated(server)
    config = backend.config.serving
    for spec in (replace(SPEC, n_epochs=1), SPEC):
        estimate = backend.estimate(spec, data)
        lost = config.max_minutes - 1 + config.inactive_timeout
        assert estimate.evaluation.hosting_hours * 60 >= lost
        assert estimate.evaluation.hosting_usd == pytest.approx(
            estimate.evaluation.hosting_hours * PER_HOUR
        )


def test_an_endpoint_that_fails_or_outlives_its_minutes_is_deleted(
    server: FakeTogether,
) -> None:
    data, backend, trained = trained_on(server)
    fresh = dedicated(server)
    fresh.open_package(backend.package(trained.model_ref, data.labels).config, {})
    server.state.failing_endpoints = 1
    with pytest.raises(BackendError, match="is ERROR; it was deleted"):
        fresh.predict(trained.model_ref, data.test.texts, data.labels)
    assert not server.state.live_endpoints()

    ticks = iter(range(0, 10_000, 90))  # every look at the clock is 90 s later
    fresh.endpoints = TogetherEndpoints(fresh.http, fresh.config, clock=lambda: next(ticks))
    server.state.endpoint_start = 5.0
    with pytest.raises(BackendError, match=r"max_minutes \(5\); it was deleted"):
        fresh.predict(trained.model_ref, data.test.texts, data.labels)
    assert not server.state.live_endpoints()


def test_a_lost_create_reply_and_a_killed_runs_endpoint_are_not_paid_twice(
    server: FakeTogether,
) -> None:
    data, backend, trained = trained_on(server)
    before = len(server.state.endpoints)
    # A killed run left an endpoint, its id in the trial's journal.
    left = backend.endpoints._create(trained.model_ref, "left", MemoryJournal())
    journal = MemoryJournal({"endpoint_id": left})
    server.state.fail_next("POST", "/v1/endpoints", 500, after=True)  # made, reply lost
    server.state.fail_next("GET", "/v1/endpoints/*", 429, count=2)
    fresh = dedicated(server)
    fresh.open_package(backend.package(trained.model_ref, data.labels).config, {})
    fresh._hosted(trained.model_ref, (data.test,), data.labels, "again", journal)
    assert len(server.state.endpoints) == before + 2  # the leftover and one more, not two
    assert server.state.endpoints[left].deleted is not None
    assert not server.state.live_endpoints() and journal.notes["endpoint_id"] == ""


def test_a_studys_endpoints_no_running_trial_holds_are_released(server: FakeTogether) -> None:
    """What `harness sweep` does when it starts and ends: a killed sweep's endpoint, never
    rerun, is deleted; one a running trial holds, and another study's, are left alone."""
    _, backend, trained = trained_on(server, "a")
    ours = backend.endpoints._create(trained.model_ref, "left", MemoryJournal())
    held = backend.endpoints._create(trained.model_ref, "held", MemoryJournal())
    theirs = trained_on(server, "b")[2]
    foreign = backend.endpoints._create(theirs.model_ref, "b", MemoryJournal())

    assert backend.release_deployments("a", held={held}) == [ours]
    assert server.state.endpoints[ours].deleted is not None
    live = {e.id for e in server.state.live_endpoints()}
    assert live == {held, foreign}
    assert backend.release_deployments("a", held=()) == [held]
    assert {e.id for e in server.state.live_endpoints()} == {foreign}


def test_dedicated_serving_without_a_hosting_price_is_a_config_error_before_spending(
    tmp_path: Path, server: FakeTogether
) -> None:
    backend = {
        "kind": "together",
        "model": TOGETHER_LLAMA,
        "base_url": server.base_url,
        "serving": DEDICATED,
        "prices": {TOGETHER_LLAMA: {**PRICE, **PRICE_NOTE}},
    }
    path = _experiment(tmp_path, _provider(server, backend), 2)
    for command in ("estimate", "sweep"):
        assert_clean_error(run_cli(command, str(path)), "hosting_per_hour")
    assert not server.state.jobs and not server.state.endpoints
    path = _experiment(tmp_path, _provider(server, {**backend, "serving": "dedicated"}), 2)
    assert_clean_error(run_cli("estimate", str(path)), "dedicated serving needs hardware")


def test_hardware_together_does_not_offer_is_refused_before_any_job_is_paid(
    tmp_path: Path, server: FakeTogether
) -> None:
    # A mistyped serving.hardware passed every check: each trial's job was trained and billed,
    # then every endpoint create was refused (400 hardware not available) and the sweep failed.
    price = {**PRICE, **PRICE_NOTE, "hosting_per_hour": PER_HOUR}
    backend = {
        "kind": "together",
        "model": TOGETHER_LLAMA,
        "base_url": server.base_url,
        "serving": {**DEDICATED, "hardware": "1x_nvidia_h100_80gb_sxmm"},
        "prices": {TOGETHER_LLAMA: price},
    }
    path = _experiment(tmp_path, _provider(server, backend), 2)
    result = run_cli("sweep", str(path), "--yes")
    assert_clean_error(result, "backend.serving.hardware", "1x_nvidia_h100_80gb_sxmm", HARDWARE)
    assert not server.state.jobs and not server.state.files and not server.state.endpoints
    assert server.state.count("GET", "/v1/hardware") == 1
    # Where the list is not served (404), the check cannot be made and does not stop a sweep.
    server.state.fail_next("GET", "/v1/hardware", 404)
    dedicated(server).preflight(tiny_data(), [MODEL])


def _provider(server: FakeTogether, backend: dict[str, object]) -> Provider:
    state = server.state
    return Provider(
        "together",
        {"TOGETHER_API_KEY": KEY},
        backend,
        lambda: list(state.jobs),
        lambda: state.count("POST", "/v1/fine-tunes", status=200),
        lambda: None,
        lambda: sum(j.tokens * int(j.request.get("n_epochs", 1)) for j in state.jobs.values()),
    )


def _dedicated_provider(server: FakeTogether) -> Provider:
    price = {**PRICE, **PRICE_NOTE, "hosting_per_hour": PER_HOUR}
    backend = {
        "kind": "together",
        "model": TOGETHER_LLAMA,
        "base_url": server.base_url,
        "serving": DEDICATED,
        "prices": {TOGETHER_LLAMA: price},
    }
    return _provider(server, backend)


@pytest.mark.slow
def test_a_sweep_scored_on_dedicated_endpoints_deletes_each_and_counts_its_hosting(
    tmp_path: Path, server: FakeTogether, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    monkeypatch.chdir(tmp_path)
    provider = _dedicated_provider(server)
    path = _experiment(tmp_path, provider, 3)
    outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda w, b: True)
    assert len(outcome.results) == 3, outcome.failures
    _assert_each_job_paid_once(tmp_path, provider, 3)
    assert server.state.endpoints and not server.state.live_endpoints()
    for result in outcome.results:
        assert result.eval_cost.hosting_usd > 0
        assert result.eval_cost.usd == pytest.approx(result.eval_cost.hosting_usd)
        assert result.model.train_cost.hosting_usd == 0.0
    # Every trial and checkpoint trial paid its own endpoint's minutes in its scoring cost.
    done = [t for t in _study(tmp_path).get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == len(server.state.endpoints) > 3  # some of the jobs have checkpoints
    assert all(t.user_attrs["eval_hosting_usd"] > 0 for t in done)
    hours = sum(t.user_attrs["eval_hosting_hours"] for t in done)
    assert hours * 60 == pytest.approx(server.state.billed_minutes())


@pytest.mark.slow
def test_a_sweep_killed_while_an_endpoint_scores_deletes_it_on_resume_and_pays_once(
    tmp_path: Path, server: FakeTogether
) -> None:
    server.state.endpoint_start = 1.0  # time enough to kill it while it starts
    provider = _dedicated_provider(server)
    path = _experiment(tmp_path, provider, 2)
    first = _sweep_process(path, provider, tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        starting = [
            e for e in server.state.live_endpoints() if server.state.endpoint_state(e) != "PENDING"
        ]
        if starting:
            break
        assert first.poll() is None, first.communicate()[0].decode()[-2000:]
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # an endpoint runs, its trial has not finished
    first.wait(timeout=10)
    left = [e.id for e in server.state.live_endpoints()]
    assert left
    second = _sweep_process(path, provider, tmp_path)
    output = second.communicate(timeout=240)[0].decode()
    assert second.returncode == 0, output[-3000:]
    assert not server.state.live_endpoints()
    assert all(server.state.endpoints[i].deleted is not None for i in left)
    _assert_each_job_paid_once(tmp_path, provider, 2)
    # The killed run's endpoint billed until the resume deleted it: the ledger counts it beside
    # the job its retry settled (it counted only the completed trials' own endpoints).
    trials = _study(tmp_path).get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    own = sum(float(t.user_attrs.get("eval_hosting_hours") or 0.0) for t in done) * 60
    left_minutes = server.state.billed_minutes() - own
    assert left_minutes >= 1
    spent = sum(TrialRecord.from_attrs(t.user_attrs).spent for t in done)
    assert committed_usd(trials) - spent >= left_minutes * PER_HOUR / 60 - 1e-9


class TestTogetherDedicatedBackend(BackendContract):
    """The backend contract, every fine-tuned model scored on a dedicated endpoint."""

    @pytest.fixture(scope="class")
    def case(self) -> Iterator[BackendCase]:
        data = tiny_data()
        with FakeTogether(job_duration=0.2) as fake:
            fake.state.oracle = oracle(data)
            fake.state.serverless_lora = False
            fake.state.endpoint_start = 0.1
            yield BackendCase(
                make=lambda: dedicated(fake),
                data=data,
                spec=TrialSpec(1, 2, 1.0, 4, MODEL, seed=7),
                missing_model="harness-test/no-such-model",
                spending=lambda: not_reads((m, p) for m, p, _ in fake.state.requests),
                env={"TOGETHER_API_KEY": KEY},
            )
            assert not fake.state.live_endpoints()


def test_an_endpoint_the_config_names_says_the_variable_does_not_move_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A promoted Together model keeps `backend.base_url`, the endpoint it was registered with;
    when it was gone, the error said only "cannot reach URL", and a user who set
    TOGETHER_BASE_URL had no way to know it is not read. It now says what moves it."""
    from harness.backends.together._client import TogetherClient, TransientError
    from harness.backends.together.config import TogetherBackendConfig

    monkeypatch.setenv("TOGETHER_API_KEY", "tg-test-key-0123456789")
    monkeypatch.setenv("TOGETHER_BASE_URL", "http://127.0.0.1:8/v1")
    config = TogetherBackendConfig(
        kind="together", model="m", base_url="http://127.0.0.1:9/v1", max_retries=0
    )
    with pytest.raises(TransientError) as gone:
        TogetherClient(config).request("GET", "/fine-tunes", "listing jobs")
    message = str(gone.value)
    assert "cannot reach http://127.0.0.1:9/v1" in message
    assert "TOGETHER_BASE_URL does not move it" in message
    assert "harness promote EXPERIMENT --trial N --set backend.base_url=URL" in message


@pytest.mark.slow
def test_a_sweep_stopped_while_an_endpoint_scores_settles_the_minutes_it_billed(
    tmp_path: Path, server: FakeTogether
) -> None:
    # SIGTERM while a trial's endpoint starts: the sweep deletes the endpoint, so it knows the
    # minutes billed. The killed run's entry is those minutes, spent, not the hosting it reserved
    # (`max_minutes` per model + `inactive_timeout`); its job stays reserved by the retry that
    # resumes it, and counted alone it is its training as billed plus those minutes.
    server.state.endpoint_start = 60.0  # still starting when the sweep is stopped
    server.state.price_per_token = 1e-6  # Together bills the job (`total_price`)
    provider = _dedicated_provider(server)
    path = _experiment(tmp_path, provider, 1)
    first = _sweep_process(path, provider, tmp_path)
    deadline = time.monotonic() + 120
    while not server.state.live_endpoints() and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[0].decode()[-2000:]
        time.sleep(0.02)
    time.sleep(0.3)  # its id is journalled
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=60)[0].decode()
    assert first.returncode == 143, output[-3000:]
    assert not server.state.live_endpoints()
    trials = _study(tmp_path).get_trials(deepcopy=False)
    (killed,) = [t for t in trials if t.state == TrialState.FAIL]
    minutes = server.state.billed_minutes()
    assert minutes == 1
    billed = minutes * PER_HOUR / 60
    entries = ledger_entries(trials)
    assert entries[killed.number] == (pytest.approx(billed), False), output[-2000:]
    assert ledger_usd(trials)[0] == pytest.approx(billed)
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert entries[retry.number] == (pytest.approx(killed.user_attrs["reserved_usd"]), True)
    training = float(killed.user_attrs["journal.billed_usd"])
    alone = ledger_entries([killed])[killed.number][0]
    assert alone == pytest.approx(training + billed)
    assert "its scoring was billed $0.0500" in output
    # Resumed, the retry pays its own scoring; the killed run's minute stays counted once.
    second = _sweep_process(path, provider, tmp_path)
    server.state.endpoint_start = 0.15
    assert second.wait(timeout=240) == 0
    trials = _study(tmp_path).get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    spent = sum(TrialRecord.from_attrs(t.user_attrs).spent for t in done)
    assert committed_usd(trials) == pytest.approx(spent + billed)

"""A Nebius sweep is priced from Nebius's models API (`GET /v0/models`) at preflight, before
anything is spent: Nebius publishes no per-model training price anywhere else (issue #24). The
fake answers in the documented shape; every figure here is synthetic."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from harness.backends.openai.backend import OpenAIBackend
from harness.backends.openai.config import OpenAIBackendConfig
from harness.errors import ConfigError
from harness.records import PreparedData
from tests.conftest import prepared, review_rows
from tests.openai_fake import FakeOpenAI

LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct"


@pytest.fixture
def data() -> PreparedData:
    return prepared(review_rows(20, seed=1), ("negative", "positive"), "e" * 64, "tiny")


def _backend(server: FakeOpenAI, prices: dict[str, Any] | None = None) -> OpenAIBackend:
    config = {"kind": "openai", "provider": "nebius", "model": LLAMA, "base_url": server.base_url}
    return OpenAIBackend(OpenAIBackendConfig.model_validate({**config, "prices": prices or {}}))


def _spent(server: FakeOpenAI) -> list[str]:
    return [r.path for r in server.state.requests if r.method == "POST"]


def test_preflight_reads_the_models_price_before_anything_is_spent(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEBIUS_API_KEY", "nb-test-key-0123456789")
    with FakeOpenAI(base_models={LLAMA: LLAMA}, dialect="nebius") as server:
        backend = _backend(server)
        backend.preflight(data, [LLAMA])
        paths = [r.path for r in server.state.requests]
    assert paths[0] == "/v0/models" and not _spent(server)
    row = backend.price_rows([LLAMA])[0]
    assert (row.training_per_1m, row.fine_tuned_input_per_1m) == (0.4, 0.02)
    assert row.fine_tuned_output_per_1m == 0.06
    assert "Nebius models API" in row.source and row.as_of == date.today().isoformat()


@pytest.mark.parametrize("price", [0.0, None])
def test_a_missing_or_zero_training_price_stops_the_sweep_naming_the_field(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch, price: float | None
) -> None:
    monkeypatch.setenv("NEBIUS_API_KEY", "nb-test-key-0123456789")
    fake = FakeOpenAI(
        base_models={LLAMA: LLAMA}, dialect="nebius", nebius_training_prices={LLAMA: price}
    )
    with fake as server, pytest.raises(ConfigError) as caught:
        _backend(server).preflight(data, [LLAMA])
    message = str(caught.value)
    assert "fine_tune.training_price_per_million_tokens" in message
    assert f'backend.prices."{LLAMA}".training_per_1m' in message
    assert not _spent(server)


def test_a_model_nebius_does_not_list_is_said_to_be_unlisted_not_unpriced(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It said "lists no such model for X: fine_tune.training_price_per_million_tokens; set
    # backend.prices.X.training_per_1m": a user who set the price, as told, then had every
    # trial refused by Nebius (400 model_not_available). It now names the model as unlisted,
    # what Nebius does list, and backend.model.
    monkeypatch.setenv("NEBIUS_API_KEY", "nb-test-key-0123456789")
    other = "Qwen/Qwen3-32B"
    fake = FakeOpenAI(base_models={other: other}, dialect="nebius")
    with fake as server, pytest.raises(ConfigError) as caught:
        _backend(server).preflight(data, [LLAMA])
    message = str(caught.value)
    assert f"does not list {LLAMA}" in message and other in message
    assert "backend.model" in message and "training_per_1m" not in message
    assert not _spent(server)


def test_the_experiments_own_prices_win_and_need_no_models_call(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEBIUS_API_KEY", "nb-test-key-0123456789")
    own = {
        "training_per_1m": 2.0,
        "fine_tuned_input_per_1m": 0.5,
        "fine_tuned_output_per_1m": 1.0,
        "source": "my rate card",
    }
    with FakeOpenAI(base_models={LLAMA: LLAMA}, dialect="nebius") as server:
        backend = _backend(server, {LLAMA: own})
        backend.preflight(data, [LLAMA])
    assert "/v0/models" not in [r.path for r in server.state.requests]
    assert backend.price_rows([LLAMA])[0].training_per_1m == 2.0


def test_without_a_key_preflight_says_how_to_set_it(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEBIUS_API_KEY", raising=False)
    with FakeOpenAI(base_models={LLAMA: LLAMA}, dialect="nebius") as server:
        with pytest.raises(ConfigError, match="NEBIUS_API_KEY is not set"):
            _backend(server).preflight(data, [LLAMA])
        assert not server.state.requests


def test_a_rejected_key_names_the_endpoint_and_the_variable_that_moves_it(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found at the Nebius dialect: a wrong key was answered "check the key and the endpoint
    # (backend.base_url or OPENAI_BASE_URL)", a variable the Nebius profile never reads
    # (NEBIUS_BASE_URL moves it), and the message did not say which endpoint refused.
    monkeypatch.setenv("NEBIUS_API_KEY", "nb-wrong-key-0123456789")
    own = {"training_per_1m": 2.0, "fine_tuned_input_per_1m": 0.5, "fine_tuned_output_per_1m": 1}
    fake = FakeOpenAI(base_models={LLAMA: LLAMA}, dialect="nebius", api_key="nb-right-key-0123")
    with fake as server, pytest.raises(ConfigError) as rejected:
        url = server.base_url
        _backend(server, {LLAMA: own}).preflight(data, [LLAMA])
    message = str(rejected.value)
    assert "rejected NEBIUS_API_KEY" in message and url in message
    assert "NEBIUS_BASE_URL" in message and "OPENAI_BASE_URL" not in message
    assert "nb-wrong-key" not in message

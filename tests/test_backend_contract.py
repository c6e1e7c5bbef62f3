"""The backend contract (`tests/backend_contract.py`) run against every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backend_config import LocalBackendConfig, OpenAIBackendConfig
from harness.backends.local import LocalBackend
from harness.backends.openai import OpenAIBackend
from harness.records import PreparedData, TrialSpec
from tests.backend_contract import BackendCase, BackendContract
from tests.conftest import prepared, review_rows
from tests.openai_fake import FakeOpenAI

LABELS = ("negative", "positive")
KEY = "sk-contract-KEY-0123456789abcdef0123"


def _data() -> PreparedData:
    # 40 distinct texts: 24 train, 8 validation, 8 test
    return prepared(review_rows(20, seed=3), LABELS, "c" * 64, "contract")


@pytest.mark.slow
class TestLocalBackend(BackendContract):
    @pytest.fixture(scope="class")
    def case(self, tmp_path_factory: pytest.TempPathFactory) -> BackendCase:
        models = tmp_path_factory.mktemp("models")
        config = LocalBackendConfig(
            kind="local",
            base_learning_rate=2e-4,
            max_length=32,
            eval_batch_size=16,
            device="cpu",
            models_dir=str(models),
        )
        spec = TrialSpec(0, 2, 1.0, 8, "all-MiniLM-L6-v2", seed=5)
        return BackendCase(
            make=lambda: LocalBackend(config),
            data=_data(),
            spec=spec,
            missing_model=str(Path(models) / "no-such-model"),
            # The cost calibration is measured once into this cache, not the user's.
            env={"XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))},
        )


class TestOpenAIBackend(BackendContract):
    @pytest.fixture(scope="class")
    def case(self) -> Iterator[BackendCase]:
        data = _data()
        truth = {
            t: y
            for s in (data.train, data.validation, data.test)
            for t, y in zip(s.texts, s.labels, strict=True)
        }
        with FakeOpenAI() as server:
            server.state.job_duration = 0.2

            def oracle(model_id: str, prompt: str) -> dict[str, float]:
                text = prompt.removesuffix("\n\n###\n\n")
                label = truth.get(text, "positive")
                other = "positive" if label == "negative" else "negative"
                return {label: 0.9, other: 0.1}

            server.state.set_oracle(oracle)
            config = OpenAIBackendConfig(
                kind="openai", base_url=server.base_url, poll_interval=0.02, poll_max_interval=0.05
            )
            spec = TrialSpec(1, 2, 1.0, 4, "gpt-4.1-nano-2025-04-14", seed=7)
            yield BackendCase(
                make=lambda: OpenAIBackend(config),
                data=data,
                spec=spec,
                missing_model="ft:gpt-4.1-nano-2025-04-14:org:none:nosuchmodel",
                env={"OPENAI_API_KEY": KEY},
            )

"""The backend contract (`tests/backend_contract.py`) run against every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.local.config import LocalBackendConfig
from harness.backends.local.encoder import LocalBackend
from harness.backends.openai.backend import OpenAIBackend
from harness.backends.openai.config import OpenAIBackendConfig
from harness.records import PreparedData, TrialSpec
from tests.backend_contract import BackendCase, BackendContract, files_of, not_reads
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
        cache = tmp_path_factory.mktemp("cache")
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
            spending=lambda: files_of(models, cache),
            # The cost calibration is measured once into this cache, not the user's.
            env={"XDG_CACHE_HOME": str(cache)},
        )


@pytest.mark.slow
class TestLocalLMBackend(BackendContract):
    """LoRA on the real SmolLM2-135M weights, converted once per machine into the user's cache
    (resolved before the case's own cache is set, so the calibration alone is measured)."""

    @pytest.fixture(scope="class")
    def case(self, tmp_path_factory: pytest.TempPathFactory) -> BackendCase:
        from harness.backends.local._lm_models import offline_smollm2
        from harness.backends.local.config import LocalLMBackendConfig
        from harness.backends.local.lm import LocalLMBackend

        models = tmp_path_factory.mktemp("lm-models")
        cache = tmp_path_factory.mktemp("lm-cache")
        config = LocalLMBackendConfig(
            kind="local_lm", max_length=40, eval_batch_size=16, device="cpu", models_dir=str(models)
        )
        spec = TrialSpec(0, 2, 4.0, 8, str(offline_smollm2()), train_examples=12, seed=5)
        return BackendCase(
            make=lambda: LocalLMBackend(config),
            data=_data(),
            spec=spec,
            missing_model=str(Path(models) / "no-such-model"),
            spending=lambda: files_of(models, cache),
            env={"XDG_CACHE_HOME": str(cache)},
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
                spending=lambda: not_reads((r.method, r.path) for r in server.state.requests),
                env={"OPENAI_API_KEY": KEY},
            )


class TestTogetherBackend(BackendContract):
    @pytest.fixture(scope="class")
    def case(self) -> Iterator[BackendCase]:
        from harness.backends.hosted.config import PriceOverride
        from harness.backends.together.backend import TogetherBackend
        from harness.backends.together.config import TogetherBackendConfig
        from tests.together_fake import FakeTogether

        data = _data()
        truth = {
            t: y
            for s in (data.train, data.validation, data.test)
            for t, y in zip(s.texts, s.labels, strict=True)
        }
        model = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
        with FakeTogether(job_duration=0.2) as server:

            def oracle(model_id: str, text: str) -> dict[str, float]:
                label = truth.get(text, "positive")
                return {label: 0.9, ("positive" if label == "negative" else "negative"): 0.1}

            server.state.oracle = oracle
            price = PriceOverride(
                training_per_1m=1.0, fine_tuned_input_per_1m=0.2, fine_tuned_output_per_1m=0.2
            )
            config = TogetherBackendConfig(
                kind="together",
                base_url=server.base_url,
                poll_interval=0.02,
                poll_max_interval=0.05,
                prices={model: price},
            )
            yield BackendCase(
                make=lambda: TogetherBackend(config),
                data=data,
                spec=TrialSpec(1, 2, 1.0, 4, model, seed=7),
                missing_model="harness-test/no-such-model",
                spending=lambda: not_reads((m, p) for m, p, _ in server.state.requests),
                env={"TOGETHER_API_KEY": "tg-contract-KEY-0123456789abcdef"},
            )

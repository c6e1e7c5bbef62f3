"""The promoted model's pyfunc class (`harness.handoff.pyfunc.HarnessClassifier`) on a stand-in
backend: how a backend's error reaches `mlflow models serve` and `harness predict`. Serving a
real promoted model is `tests/test_serving.py` (slow tier)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from harness.errors import ConfigError
from harness.handoff.pyfunc import HarnessClassifier
from harness.handoff.serve import classify
from harness.records import Cost, Prediction

KEY = "sk-pyfunc-test-0123456789abcdef"


class _KeylessBackend:
    """An OpenAI model served where OPENAI_API_KEY is not set: what the real backend raises."""

    def predict(
        self, model_ref: str, texts: Sequence[str], labels: Sequence[str]
    ) -> tuple[list[Prediction], Cost]:
        raise ConfigError(f"OPENAI_API_KEY is not set (and not {KEY})")


def _model() -> HarnessClassifier:
    model = HarnessClassifier()
    model.labels, model.backend, model.model_ref = ["negative", "positive"], _KeylessBackend(), "m"
    return model


def test_a_backend_error_reaches_a_model_server_as_its_own_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by hand: `mlflow models serve` of an OpenAI model with no key answered HTTP 400
    # "Encountered an unexpected error while evaluating the model. Verify that the serialized
    # input Dataframe is compatible with the model", the cause buried in a stack trace: the
    # scoring server passes on only an MlflowException's message and code.
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(MlflowException) as raised:
        _model().predict(None, pd.DataFrame({"text": ["A delight."]}))
    assert "OPENAI_API_KEY is not set" in raised.value.message
    assert KEY not in raised.value.message  # a provider's message may echo a key
    assert raised.value.get_http_status_code() == 500  # the server's set-up, not the request


class _Loaded:
    """As `mlflow.pyfunc.load_model` gives the model back: `predict(data)`."""

    def predict(self, data: pd.DataFrame) -> pd.DataFrame:
        return _model().predict(None, data)


def test_harness_predict_says_a_backend_error_as_it_is() -> None:
    # Not "the model refused the texts": the texts were fine.
    with pytest.raises(ConfigError, match=r"^OPENAI_API_KEY is not set"):
        classify(_Loaded(), ["A delight."])

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


class _EchoBackend:
    """Scores `positive` for a text that says "delight"; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def predict(
        self, model_ref: str, texts: Sequence[str], labels: Sequence[str]
    ) -> tuple[list[Prediction], Cost]:
        self.asked.append(list(texts))
        scores = [0.9 if "delight" in text else 0.2 for text in texts]
        return [
            Prediction(
                label="positive" if s > 0.5 else "negative",
                confidence=max(s, 1 - s),
                scores={"negative": 1 - s, "positive": s},
            )
            for s in scores
        ], Cost()


def test_a_dict_of_columns_is_classified_text_by_text() -> None:
    # Found by QA: `mlflow.pyfunc.load_model(...).predict({"text": ["A delight.", "Dull."]})`
    # raised "nothing to classify (all 1 texts given are empty)": MLflow's signature check
    # hands a dict of columns over as one row whose `text` cell is the whole list.
    from mlflow.models.utils import _enforce_schema
    from mlflow.types import ColSpec, Schema

    model, backend = HarnessClassifier(), _EchoBackend()
    model.labels, model.backend, model.model_ref = ["negative", "positive"], backend, "m"
    signature = Schema([ColSpec("string", "text")])
    given = _enforce_schema({"text": ["A delight.", "", "Dull."]}, signature)
    out = model.predict(None, given)
    assert list(out["label"]) == ["positive", None, "negative"]  # one row per text, blank null
    assert backend.asked == [["A delight.", "Dull."]]
    # A frame of rows is read as before: one text per row.
    rows = _enforce_schema(pd.DataFrame({"text": ["Dull.", "A delight."]}), signature)
    assert list(model.predict(None, rows)["label"]) == ["negative", "positive"]


# What a caller sends (a pasted line, a file read with its newlines, macOS' decomposed accents, a
# Windows-1252 ellipsis read as Latin-1) and what `harness prepare` made of the same text.
RAW = "  Un  cafe\u0301\tbien\u00a0servi\x85 a delight.\n\n"
PREPARED = "Un café bien servi a delight."


def test_the_model_is_asked_the_text_as_it_was_trained_on() -> None:
    # Found by QA (train/serve skew): `harness predict`, the pyfunc model and `harness serve`
    # passed the caller's raw text to the backend, while the model was trained and scored on
    # `harness prepare`'s normalised texts (NFC, whitespace collapsed, stripped).
    from harness.data.prepare import normalise_text  # what `harness prepare` applies

    assert normalise_text(RAW) == PREPARED
    model, backend = HarnessClassifier(), _EchoBackend()
    model.labels, model.backend, model.model_ref = ["negative", "positive"], backend, "m"
    out = model.predict(None, pd.DataFrame({"text": [RAW, PREPARED, " "]}))
    assert backend.asked == [[PREPARED, PREPARED]]
    assert out["label"].tolist() == ["positive", "positive", None]

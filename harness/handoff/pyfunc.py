"""MLflow pyfunc wrappers for promoted models: what `mlflow.pyfunc.load_model` gives back.

One wrapper serves every backend: it rebuilds the backend the sweep used and classifies with its
`predict`, so a registered model puts a text to the model exactly as it was trained and scored
(same tokenizer and `max_length` for a local encoder; same chat messages or prompt + separator,
and the same logprob label choice, for an OpenAI fine-tune). What it needs travels with the model,
as the backend packaged it (`Backend.package`): the local weights as an artifact, the OpenAI model
id, endpoint, label set and prompt format in `model_config` (never the API key, which is read from
`OPENAI_API_KEY` when predicting).

It is logged as a "model from code" (`ENTRY_POINT` below: a two-line file that MLflow copies
into the model) rather than pickled: pickled models are what MLflow is moving away from, and the
file keeps the model readable. Loading needs `harness` importable, nothing else of its state.

`predict` takes a DataFrame with a `text` column (or one column of texts), a Series, a list of
strings or one string, and returns one row per text: `label`, `confidence` and `score_<label>`
for every label of the label set. `read_rows` reads the rows of `harness predict --file`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from harness.errors import ConfigError
from harness.records import Prediction

TEXT_COLUMN = "text"
SCORE_PREFIX = "score_"

# The models-from-code entry point, written next to the model by `harness.handoff.promote`.
ENTRY_POINT = (
    "from mlflow.models import set_model\n"
    "from harness.handoff.pyfunc import HarnessClassifier\n\n"
    "set_model(HarnessClassifier())\n"
)


def texts_of(model_input: Any) -> list[str]:
    """The texts in whatever shape a pyfunc caller hands over.

    Raises:
        ValueError: A DataFrame with several columns and none named `text`, or no texts at all
            in a shape this does not understand.
    """
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(
                f"expected a {TEXT_COLUMN!r} column, got columns {list(model_input.columns)}"
            )
        return [str(t) for t in column.tolist()]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input.tolist()]
    if hasattr(model_input, "tolist"):  # numpy arrays
        model_input = model_input.tolist()
    if isinstance(model_input, Sequence):
        return [str(t) for t in model_input]
    raise ValueError(f"cannot read texts from a {type(model_input).__name__}")


def read_texts(path: Path, column: str = TEXT_COLUMN) -> list[str]:
    """The non-blank texts of a file (see `read_rows`), in file order."""
    texts = (row_text(row, column) for row in read_rows(path, column))
    return [text for text in texts if text.strip()]


def read_rows(path: Path, column: str = TEXT_COLUMN) -> list[dict[str, Any]]:
    """The rows of a file, every column kept: a CSV (comma, else a sniffed `;`, tab or `|`) or a
    JSONL with a `column`, else plain text with one text per line (as `{"text": line}`). Blank
    texts are kept: the caller decides what to do with them (`row_text` reads one).

    Raises:
        ConfigError: The file cannot be read, a JSONL line is not a JSON object, or a CSV /
            JSONL has no such column.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            rows = _csv_rows(path)
        elif suffix in (".jsonl", ".ndjson"):
            rows = _jsonl_rows(path)
        else:
            return [{TEXT_COLUMN: line} for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and pandas' errors included
        raise ConfigError(f"{path}: cannot read texts ({exc})") from None
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if rows and column not in columns:
        raise ConfigError(f"{path}: no {column!r} column (columns: {', '.join(columns)})")
    return rows


def row_text(row: dict[str, Any], column: str = TEXT_COLUMN) -> str:
    """A row's text: missing or null is empty, a number its digits."""
    value = row.get(column)
    return "" if value is None else str(value)


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    if len(frame.columns) == 1:  # a spreadsheet exported with `;` or tabs reads as one column
        with path.open(encoding="utf-8-sig", newline="") as handle:
            sample = handle.read(64 * 1024)
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=";\t|").delimiter
        except csv.Error:
            delimiter = ","
        if delimiter != ",":
            frame = pd.read_csv(
                path, sep=delimiter, dtype=str, keep_default_na=False, encoding="utf-8-sig"
            )
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: malformed JSON, {exc.msg}") from None
        if not isinstance(record, dict):
            raise ValueError(f"line {number}: a JSON {type(record).__name__}, expected an object")
        rows.append(record)
    return rows


def predictions_frame(predictions: Sequence[Prediction], labels: Sequence[str]) -> pd.DataFrame:
    """One row per prediction: label, confidence and the score of every label."""
    rows = [
        {
            "label": p.label,
            "confidence": float(p.confidence),
            **{f"{SCORE_PREFIX}{label}": float(p.scores.get(label, 0.0)) for label in labels},
        }
        for p in predictions
    ]
    columns = ["label", "confidence", *(f"{SCORE_PREFIX}{label}" for label in labels)]
    return pd.DataFrame(rows, columns=columns)


class HarnessClassifier(PythonModel):
    """A promoted model of any backend, called through that backend's own `predict`.

    Config (`model_config`): what `Backend.package` stored: `backend` (the backend's settings,
    never a key), `labels` (the label set, in the order of the score columns) and whatever the
    backend needs to find its model again (an OpenAI model id and prompt format). Artifacts: the
    files the backend packaged (a local model's weights folder).
    """

    def load_context(self, context: Any) -> None:
        """Rebuild the backend and check the package fits this version; no paid request."""
        from harness.backends import load_backend
        from harness.config import parse_backend_config

        config = dict(context.model_config or {})
        self.labels = [str(label) for label in config["labels"]]
        self.backend = load_backend(parse_backend_config(config["backend"], "model_config"))
        self.model_ref = self.backend.open_package(config, dict(context.artifacts or {}))

    # `model_input` is hinted as a DataFrame, the shape MLflow's signature check hands over (a
    # hint MLflow does not try to infer a schema from); `texts_of` accepts the other shapes too.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Label, confidence and per-label scores for every text."""
        texts = texts_of(model_input)
        predictions, _ = self.backend.predict(self.model_ref, texts, self.labels)
        return predictions_frame(predictions, self.labels)

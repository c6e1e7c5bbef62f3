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
file keeps the model readable. The harness code travels with the model (`code_paths`, see
`harness.handoff.environment`), so loading needs no `harness` installed.

The model's signature names its input (`harness.handoff.environment`): `predict` reads the `text`
column of a DataFrame by name, whatever columns come before it, and refuses a frame without one
(MLflow checks the signature first; other columns are dropped). It returns one row per input
row: `label`, `confidence` and `score_<label>` for every label of the label set. A row whose
text is empty, blank or not text is skipped and counted, as `harness predict` does: its row
comes back with a null label, and the count is logged (`skipped 2 empty rows`); a batch with
nothing to classify is refused. Every text is normalised first, as `harness prepare` normalised
the texts the model was trained and scored on (`harness.data.text.normalise_text`), so a trailing
newline, a doubled space or a decomposed accent changes nothing. `read_rows` reads the rows of
`harness predict --file`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from harness.data.text import normalise_text
from harness.errors import ConfigError, HarnessError
from harness.records import Prediction

TEXT_COLUMN = "text"
# A whole number as it is written when nothing else is meant: no sign but "-", no leading zero
# ("007" is a code, not 7), no "-0"; it reads back to the same digits.
_PLAIN_INT = re.compile(r"0|-?[1-9][0-9]*")
SCORE_PREFIX = "score_"
_logger = logging.getLogger(__name__)

# The models-from-code entry point, written next to the model by `harness.handoff.promote`.
ENTRY_POINT = (
    "from mlflow.models import set_model\n"
    "from harness.handoff.pyfunc import HarnessClassifier\n\n"
    "set_model(HarnessClassifier())\n"
)


def texts_of(model_input: Any) -> list[str | None]:
    """The texts of a frame's `text` column (a Series, a list or one string is taken as the
    texts themselves; a one-row frame whose cell is a list, as MLflow hands over a dict of
    columns, gives that list), each as `text_or_none` reads it.

    Raises:
        MlflowException: A DataFrame without a `text` column (naming the columns it has), or a
            shape this does not understand. MLflow's own error type, so a model server answers
            HTTP 400 with the message.
    """
    from mlflow.exceptions import MlflowException

    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise MlflowException.invalid_parameter_value(
                f"expected a {TEXT_COLUMN!r} column, got columns "
                f"{[str(c) for c in model_input.columns]}"
            )
        column = model_input[TEXT_COLUMN]
        # MLflow's signature check hands a dict of columns ({"text": [...]}) over as one row
        # whose cell is the whole list: those are the texts, not one text that is no string.
        only = column.iloc[0] if len(column) == 1 else None
        model_input = only if isinstance(only, list | tuple | np.ndarray) else column
    if hasattr(model_input, "tolist"):  # Series, numpy arrays
        model_input = model_input.tolist()
    if isinstance(model_input, Sequence):
        return [text_or_none(value) for value in model_input]
    raise MlflowException.invalid_parameter_value(
        f"cannot read texts from a {type(model_input).__name__}: give a DataFrame with a "
        f"{TEXT_COLUMN!r} column"
    )


def text_or_none(value: Any) -> str | None:
    """A value's text as `harness predict` reads it: a string, or a number's digits; None for
    null, NaN, an empty or whitespace-only string, or anything else (a list, a dict)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None if value != value else str(value)  # NaN is pandas' null
    if isinstance(value, str):
        return value if value.strip() else None
    return None


def skipped_message(skipped: int) -> str:
    """What `harness predict` and a served model say about rows without a text."""
    return f"skipped {skipped} empty {'row' if skipped == 1 else 'rows'}"


def read_texts(path: Path, column: str = TEXT_COLUMN) -> list[str]:
    """The non-blank texts of a file (see `read_rows`), in file order."""
    texts = (row_text(row, column) for row in read_rows(path, column))
    return [text for text in texts if text.strip()]


def read_rows(path: Path, column: str = TEXT_COLUMN) -> list[dict[str, Any]]:
    """The rows of a file, every column kept, by its suffix: a CSV (comma, else a sniffed `;`,
    tab or `|`), a TSV, a JSONL, a JSON list of objects or a Parquet file with a `column`; any
    other file is plain text with one text per line (as `{"text": line}`). Blank texts are kept:
    the caller decides what to do with them (`row_text` reads one).

    Raises:
        ConfigError: The file cannot be read or is not text (of another format), a JSON(L) line
            is not an object, or a table has no such column.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in _TABLE_READERS:
            reader = _TABLE_READERS[suffix]
            rows = reader(path)
            if reader in (_csv_rows, _tsv_rows):  # cells read as text: ids become numbers again
                rows = _whole_number_columns(rows, keep=column)
        else:
            return [{TEXT_COLUMN: line} for line in _text_lines(path)]
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file ({exc.reason} at byte {exc.start}); give a CSV, TSV, "
            "JSONL, JSON or Parquet file with a text column, or a text file with one per line"
        ) from None
    except (OSError, ValueError) as exc:  # pandas' and pyarrow's errors included
        raise ConfigError(f"{path}: cannot read texts ({exc})") from None
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if rows and column not in columns:
        raise ConfigError(f"{path}: no {column!r} column (columns: {', '.join(columns)})")
    return rows


def _text_lines(path: Path) -> list[str]:
    """A plain text file's lines, split at newlines only (`\n`, `\r\n`, `\r`): a U+2028, U+0085
    or form feed inside a line is part of its text (normalised to a space before the model reads
    it), not a line break that would give one line two predictions. A byte-order mark is no
    text."""
    lines = path.read_text(encoding="utf-8-sig").split("\n")  # universal newlines: `\n` only
    return lines[:-1] if lines[-1] == "" else lines


def row_text(row: dict[str, Any], column: str = TEXT_COLUMN) -> str:
    """A row's text (`text_or_none`): missing, null or not text is empty, a number its digits."""
    return text_or_none(row.get(column)) or ""


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


def _whole_number_columns(rows: list[dict[str, Any]], keep: str) -> list[dict[str, Any]]:
    """A CSV's cells are text; a column whose every cell is a plain whole number (`_PLAIN_INT`)
    is read as numbers, as a JSONL file would give them (ids above all). Any other column keeps
    every cell as written (a leading zero, a decimal, a word or an empty cell anywhere in it), so
    no column mixes types; `keep`, the text column the model reads, is always text."""
    columns = dict.fromkeys(key for row in rows for key in row if key != keep)
    whole = [c for c in columns if all(_PLAIN_INT.fullmatch(str(row.get(c, ""))) for row in rows)]
    return [{k: int(v) if k in whole else v for k, v in row.items()} for row in rows]


def _tsv_rows(path: Path) -> list[dict[str, Any]]:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    # Through JSON, so values are plain Python (numpy's are not JSON) and nulls are None.
    rows = json.loads(pd.read_parquet(path).to_json(orient="records", force_ascii=False))
    return [{str(k): v for k, v in row.items()} for row in rows]


def _json_rows(path: Path) -> list[dict[str, Any]]:
    listed = json.loads(path.read_text(encoding="utf-8-sig"))
    if not isinstance(listed, list) or not all(isinstance(row, dict) for row in listed):
        raise ValueError("expected a list of objects, one per text (or use JSONL)")
    return listed


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


_TABLE_READERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    ".csv": _csv_rows,
    ".tsv": _tsv_rows,
    ".tab": _tsv_rows,
    ".jsonl": _jsonl_rows,
    ".ndjson": _jsonl_rows,
    ".json": _json_rows,
    ".parquet": _parquet_rows,
}


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


def _to_stderr(text: str) -> None:
    """A step of a call that takes minutes (an Azure deployment made, deleted): said on stderr,
    where `harness predict` keeps its notes and a model server its log, never in the answer."""
    with contextlib.suppress(OSError, ValueError):  # stderr gone (a closed terminal): unsaid
        print(text, file=sys.stderr, flush=True)


def name_repromote(exc: HarnessError, study: Any, trial: Any) -> None:
    """Put the model's study and trial in `exc`'s `harness promote EXPERIMENT --trial N` (an
    endpoint gone: register it again), where both are known; else leave it as it is."""
    from harness.backends.hosted.config import REPROMOTE

    text = str(exc)
    if not study or trial is None or REPROMOTE not in text or len(exc.args) != 1:
        return
    named = f"harness promote {shlex.quote(str(study))} --trial {trial}"
    exc.args = (text.replace(REPROMOTE, named),)


class HarnessClassifier(PythonModel):
    """A promoted model of any backend, called through that backend's own `predict`.

    Config (`model_config`): what `Backend.package` stored: `backend` (the backend's settings,
    never a key), `labels` (the label set, in the order of the score columns) and whatever the
    backend needs to find its model again (an OpenAI model id and prompt format). Artifacts: the
    files the backend packaged (a local model's weights folder).
    """

    study: Any = None  # the study and trial it came from, where its package says (`load_context`)
    trial: Any = None

    def load_context(self, context: Any) -> None:
        """Rebuild the backend and check the package fits this version; no paid request."""
        from harness.backends import load_backend
        from harness.config import parse_backend_config

        config = dict(context.model_config or {})
        self.labels = [str(label) for label in config["labels"]]
        self.backend = load_backend(parse_backend_config(config["backend"], "model_config"))
        self.model_ref = self.backend.open_package(config, dict(context.artifacts or {}))
        self.study, self.trial = config.get("study"), config.get("trial")  # older: no trial
        deployments = getattr(self.backend, "deployments", None)  # Azure: one made per call
        if deployments is not None:
            deployments.announce = _to_stderr

    # `model_input` is hinted as a DataFrame, the shape MLflow's signature check hands over (a
    # hint MLflow does not try to infer a schema from); `texts_of` accepts the other shapes too.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Label, confidence and per-label scores for every row; null for a row without text.

        Raises:
            MlflowException: No `text` column, or not one text to classify (invalid input); or
                the backend failed (internal error; the HarnessError is its `__cause__`).
        """
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

        from harness.locations import redact_text

        texts = texts_of(model_input)
        kept = [i for i, text in enumerate(texts) if text is not None]
        if not kept:
            given = f"all {len(texts)} texts given are empty" if texts else "no rows given"
            raise MlflowException.invalid_parameter_value(f"nothing to classify ({given})")
        if len(kept) < len(texts):
            _logger.warning(skipped_message(len(texts) - len(kept)))
        try:
            # As `harness prepare` normalised every text the model was trained and scored on.
            normalised = [normalise_text(str(texts[i])) for i in kept]
            predictions, _ = self.backend.predict(self.model_ref, normalised, self.labels)
        except HarnessError as exc:
            name_repromote(exc, self.study, self.trial)
            # A model server passes on an MlflowException's message and code only (anything
            # else is "verify that the serialized input Dataframe is compatible"). A backend's
            # error is the server's set-up or its provider (no key, a model gone): HTTP 500.
            raise MlflowException(redact_text(str(exc)), error_code=INTERNAL_ERROR) from exc
        frame = predictions_frame(predictions, self.labels)
        if len(kept) == len(texts):
            return frame
        # Skipped rows: null in every column (None, not NaN, so JSON answers carry `null`).
        frame = frame.set_axis(kept).reindex(range(len(texts))).astype(object)
        return frame.where(frame.notna(), None)

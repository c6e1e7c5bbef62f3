"""Where labelled texts come from: bundled datasets, CSV / JSONL / Parquet files, Hugging Face.

`read_frame` turns any source into a frame of `text` and `label` strings, dropping (and counting)
rows without both; `harness.data.prepare` does everything after that. Every problem a user can
fix raises `DataError` naming the file, column or line. Bundled datasets live in
`harness.data.bundled`, Parquet and Hugging Face readers in `harness.data.columnar`.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import DatasetConfig
from harness.data.bundled import BUNDLED, ensure_bundled
from harness.data.columnar import read_hf, read_parquet
from harness.data.text import normalise_text
from harness.errors import DataError

_ACCEPTED = (
    "a bundled name ({bundled}), a .csv, .jsonl, .json or .parquet file, "
    "or hf:NAME[:CONFIG] for a Hugging Face dataset"
)
_DECIMAL_INT = re.compile(r"[+-]?\d+(\.0*)?")
_DECIMAL = re.compile(r"[+-]?\d+\.\d+")
_CODE = re.compile(r"0\d+")
_SURROGATE = re.compile("[\ud800-\udfff]")


# --- reading any source --------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedFrame:
    """A source read into `text` / `label` strings, with the row accounting for the report."""

    frame: pd.DataFrame
    where: str
    rows_read: int
    rows_dropped_empty: int


def load_frame(config: DatasetConfig, resolve: Callable[[str], Path]) -> pd.DataFrame:
    """Read a dataset into a frame with exactly the columns `text` and `label` (both str).

    Rows with an empty or missing text or label are dropped; labels are stripped and numeric
    labels written as floats (`1.0`) become `"1"`. Bundled datasets always use their own columns.

    Args:
        config: The dataset section of an experiment (source, column names, HF split).
        resolve: Turns a path named in the experiment file into a real path.

    Returns:
        The texts (as found, not yet normalised) and labels, in file order.

    Raises:
        DataError: Unknown source, missing file, unsupported extension, missing column, malformed
            line, empty file, or no row with both a text and a label.
    """
    return read_frame(config, resolve).frame


def read_frame(config: DatasetConfig, resolve: Callable[[str], Path]) -> LoadedFrame:
    """`load_frame`, plus where the rows came from and how many were read and dropped."""
    source = config.source.strip()
    columns = (config.text_column, config.label_column)
    if source.startswith("hf:") or source in BUNDLED:
        _no_encoding(config, source)
        if source in BUNDLED:
            return _clean(_read_csv(ensure_bundled(source), "utf-8"), source, ("text", "label"))
        return _clean(read_hf(source, config), source, columns)
    path = resolve(source)
    suffix = path.suffix.lower()
    if not suffix and "/" not in source and "\\" not in source and not path.is_file():
        accepted = _ACCEPTED.format(bundled=", ".join(sorted(BUNDLED)))
        close = difflib.get_close_matches(source, sorted(BUNDLED), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"dataset.source {source!r} is unknown{hint}; use {accepted}")
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".json": _read_jsonl}
    if suffix == ".parquet":
        _no_encoding(config, str(path))
        return _clean(read_parquet(_existing(path, source), columns), str(path), columns)
    if suffix not in readers:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; "
            "use .csv, .jsonl, .json or .parquet"
        )
    frame = readers[suffix](_existing(path, source), config.encoding)
    return _clean(frame, str(path), columns)


def _existing(path: Path, source: str) -> Path:
    if not path.is_file():
        why = " (it is a directory)" if path.is_dir() else ""
        if not Path(source).expanduser().is_absolute():
            why += (
                f" (dataset.source {source!r} is relative: looked up from the current directory "
                f"{Path.cwd()}, then beside the experiment file and one folder above it)"
            )
        raise DataError(f"{path}: no such file{why}")
    return path


def _no_encoding(config: DatasetConfig, where: str) -> None:
    """A source that decodes itself takes no `dataset.encoding` (a setting that would be
    silently ignored is an error)."""
    if codecs.lookup(config.encoding).name != "utf-8":
        raise DataError(
            f"{where}: dataset.encoding {config.encoding!r} applies to CSV and JSONL files only; "
            "this source carries its own encoding: remove the setting"
        )


def read_text(path: Path, encoding: str) -> str:
    """The file's text decoded as `encoding` (UTF-8: a leading byte-order mark is dropped).

    Raises:
        DataError: A byte does not decode; the message names the file, the byte's offset and
            line, and the `dataset.encoding` setting.
    """
    raw = path.read_bytes()
    utf8 = codecs.lookup(encoding).name == "utf-8"
    try:
        return raw.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as exc:
        if utf8 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            # A spreadsheet's "Unicode text" export: latin-1 would decode it, into NULs.
            raise DataError(
                f"{path}: not UTF-8 text: it starts with a UTF-16 byte-order mark (a "
                "spreadsheet's Unicode text export); set dataset.encoding: utf-16"
            ) from None
        line = raw.count(b"\n", 0, exc.start) + 1
        name = "UTF-8" if utf8 else repr(encoding)
        raise DataError(
            f"{path}: not {name} text (byte 0x{raw[exc.start]:02x} at offset {exc.start}, line "
            f"{line}, does not decode); set dataset.encoding to the file's encoding, e.g. "
            "dataset.encoding: latin-1 (or cp1252) for a Western European spreadsheet export"
        ) from None


def _sniffed_delimiter(text: str) -> str | None:
    """The delimiter of a CSV that is not comma-separated (`;`, tab or `|`), or None."""
    try:
        found = csv.Sniffer().sniff(text[: 64 * 1024], delimiters=";\t|").delimiter
    except csv.Error:
        return None
    return found if found != "," else None


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    # Decoded here, not by pandas: its decoding error gives an offset into a buffer, not the file.
    text = read_text(path, encoding)
    excel = re.match(r"sep=(.)(?=\r?\n)", text)  # Excel's `sep=;` line names the delimiter
    if excel:  # left as a blank line, so every later line keeps its number in messages
        text = text[excel.end() :]
    delimiter = excel[1] if excel else _delimiter(text)
    return _aligned(path, text, _parse_csv(path, text, delimiter), delimiter)


def _delimiter(text: str) -> str:
    """`,` unless the header row has none: a spreadsheet exported with `;` (or tabs) then, whose
    delimiter is read from the header, before any row is parsed: a text holding a comma (which
    such an export does not quote) would otherwise make its row look malformed."""
    header = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    if len(next(csv.reader([header]), [])) > 1:  # `"a;b",c` is comma-separated, `"a,b";c` not
        return ","
    found = max(";\t|", key=header.count)
    return found if header.count(found) else _sniffed_delimiter(text) or ","


def _parse_csv(path: Path, text: str, delimiter: str, **options: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(
            io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, **options
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        line = found and _record_line(text, delimiter, int(found[2]))
        if found and line:
            raise DataError(
                f"{path}: malformed CSV: line {line} has {found[3]} fields, the header "
                f"{found[1]} (a field holding {delimiter!r} needs double quotes)"
            ) from None
        opened = re.search(r"EOF inside string starting at row (\d+)", str(exc))
        line = opened and _record_line(text, delimiter, int(opened[1]) + 1)
        if line:  # pandas' row: 0-based records, the header and blank lines counted
            raise DataError(
                f"{path}: malformed CSV: the quoted field opened on line {line} never closes (a "
                'quote inside a quoted field is written twice: "")'
            ) from None
        raise DataError(f"{path}: malformed CSV ({str(exc).strip()})") from None


def _record_line(text: str, delimiter: str, record: int, data_rows: bool = False) -> int | None:
    """The file line where a record starts, as an editor numbers lines: pandas counts records
    (1-based, header and blank lines included; a quoted field over several lines is one).
    `data_rows`: `record` counts the rows after the header that are not blank instead."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    end, n = 0, 0
    try:
        for i, row in enumerate(reader):
            n += 1 if not data_rows else int(i > 0 and bool(row))
            if n == record:
                return end + 1
            end = reader.line_num
    except csv.Error:
        return None
    return None


def _aligned(path: Path, text: str, frame: pd.DataFrame, delimiter: str) -> pd.DataFrame:
    """Rows with more fields than the header: pandas made the first fields the index, which
    shifts every column (`review,a,note` under `text,label` read text `a`, label `note`).
    Trailing delimiters (empty extra fields) are harmless and dropped; a value there is a column
    without a name, which no setting can pick, so it is refused."""
    if isinstance(frame.index, pd.RangeIndex):
        return frame
    fields = _parse_csv(path, text, delimiter, header=None, skiprows=1)
    width = len(frame.columns)
    extra = fields.iloc[:, width:].ne("").any(axis=1).to_numpy()
    if extra.any():
        row = int(extra.argmax()) + 1
        line = _record_line(text, delimiter, row, data_rows=True)
        where = f"line {line}" if line else f"data row {row}"
        raise DataError(
            f"{path}: {where} has {len(fields.columns)} fields, the header {width}: a column "
            "without a name; name it in the header row (or remove it)"
        )
    with warnings.catch_warnings():  # pandas warns of the empty fields it drops
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        return _parse_csv(path, text, delimiter, index_col=False)


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    content = read_text(path, encoding)
    if not content.strip():
        raise DataError(f"{path}: the file is empty")
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        try:
            records = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        if not all(isinstance(record, dict) for record in records):
            raise DataError(f"{path}: expected a JSON array of objects")
        for number, record in enumerate(records, start=1):
            _whole_characters(record, f"{path}: record {number}")
        return pd.DataFrame.from_records(records)
    if path.suffix.lower() == ".json" and "\n" in content.strip():
        _no_single_object(path, content)
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    # Split on "\n" only: str.splitlines() would also split inside texts at U+2028 and friends.
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{number}: malformed JSON on line {number} ({exc.msg}, column {exc.colno})"
            ) from None
        if not isinstance(record, dict):
            kind = type(record).__name__
            raise DataError(f"{path}:{number}: line {number} is a JSON {kind}, expected an object")
        _whole_characters(record, f"{path}:{number}: line {number}")
        rows.append(record)
        numbers.append(number)
    frame = pd.DataFrame.from_records(rows)
    frame.attrs["line_numbers"] = numbers  # so a bad value is named by its line
    return frame


def _whole_characters(record: dict[str, Any], where: str) -> None:
    """JSON can escape half a UTF-16 pair (`"\\ud83d"`: a tweet cut inside an emoji); Python
    reads it as a lone surrogate, which no UTF-8 file, digest or API request can hold."""
    for key, value in record.items():
        half = _SURROGATE.search(value) if isinstance(value, str) else None
        if half:
            raise DataError(
                f"{where}: field {str(key)!r} holds {half[0]!a}, half of a UTF-16 "
                "surrogate pair (an emoji or other character cut in two), which is not text and "
                "cannot be written as UTF-8: remove it or write the whole character"
            )


def _no_single_object(path: Path, content: str) -> None:
    """A pretty-printed JSON object is valid JSON, just not records: say so, not "malformed"."""
    try:
        whole = json.loads(content)
    except json.JSONDecodeError:
        return  # not one document: read as JSON Lines, which names the bad line
    if isinstance(whole, dict):
        keys = ", ".join(repr(str(k)) for k in list(whole)[:5]) or "none"
        raise DataError(
            f"{path}: one JSON object (keys: {keys}), not records; expected a JSON array of "
            "objects or JSON Lines (one object per line), each with the text and label fields"
        )


def _clean(frame: pd.DataFrame, where: str, columns: tuple[str, str]) -> LoadedFrame:
    for column, setting in zip(columns, ("text_column", "label_column"), strict=True):
        if column not in frame.columns:
            names = [str(c) for c in frame.columns]
            present = ", ".join(map(repr, names)) or "(none)"
            same = [n for n in names if n.strip().casefold() == column.casefold()]
            close = same or difflib.get_close_matches(column, names, n=1, cutoff=0.8)
            hint = f" did you mean {close[0]!r}?" if close else ""
            raise DataError(
                f"{where}: no column {column!r} (dataset.{setting});{hint} columns: {present}"
            )
    if len(frame) == 0:
        raise DataError(f"{where}: the file has no rows")
    _check_scalars(frame, where, columns)
    texts = [_text_str(v) for v in frame[columns[0]]]
    labels = [canonical_label(v) for v in frame[columns[1]]]
    kept = [
        (t, lab) for t, lab in zip(texts, labels, strict=True) if t is not None and lab is not None
    ]
    if not kept:
        raise DataError(f"{where}: none of its {len(frame)} rows has both a text and a label")
    clean = pd.DataFrame(kept, columns=["text", "label"], dtype=str)
    clean.attrs.update(
        source=where, rows_read=len(frame), rows_dropped_empty=len(frame) - len(kept)
    )
    return LoadedFrame(clean, where, len(frame), len(frame) - len(kept))


def _check_scalars(frame: pd.DataFrame, where: str, columns: tuple[str, str]) -> None:
    """A list or an object where one text or one label belongs (multi-label JSONL, a nested
    record) is refused by its line, not trained on as its Python repr."""
    lines: list[int] | None = frame.attrs.get("line_numbers")
    for column, setting in zip(columns, ("text_column", "label_column"), strict=True):
        for row, value in enumerate(frame[column]):
            if isinstance(value, list | tuple | dict | np.ndarray):
                kind = "an object" if isinstance(value, dict) else "a list"
                at = f":{lines[row]}: line {lines[row]}" if lines else f": row {row + 1}"
                shown = repr(value.tolist() if isinstance(value, np.ndarray) else value)
                hint = " (one label per text: multi-label data is not supported)"
                raise DataError(
                    f"{where}{at}: dataset.{setting} {column!r} holds {kind} ({shown[:80]}); "
                    f"expected one string or number{hint if setting == 'label_column' else ''}"
                )


def _is_missing(value: object) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _text_str(value: object) -> str | None:
    if _is_missing(value):
        return None
    text = str(value)
    return text if text.strip() else None


def canonical_label(value: object) -> str | None:
    """A label as a string, normalised as texts are (Unicode NFC, whitespace collapsed and
    stripped; None if missing, or NaN written out). A number is written one way whatever the
    file wrote: `1.0` (a float or a string) becomes `"1"`, `1.50` and `+1.5` become `"1.5"`, as
    the float 1.5 reads, so one value is one class; a zero-padded code (`01`) is kept as
    written."""
    if _is_missing(value):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    label = normalise_text(str(value))  # as texts are
    if label.casefold() == "nan":  # a missing number written out (`astype(str)`), not a class
        return None
    if _CODE.fullmatch(label):  # zero-padded: a code (`01`), kept as written
        return label
    if _DECIMAL_INT.fullmatch(label):
        return str(int(label.split(".")[0]))
    if _DECIMAL.fullmatch(label) and Decimal(label) == Decimal(repr(float(label))):
        return repr(float(label))  # only where the float says the same number, digit for digit
    return label or None

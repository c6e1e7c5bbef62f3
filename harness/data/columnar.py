"""Sources that carry their own types and encoding: Parquet files and Hugging Face datasets.

Each is read into a pandas frame of the source's own columns; `harness.data.sources` picks the
text and label columns and cleans them as it does a CSV's.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from harness.config import DatasetConfig
from harness.errors import DataError


def read_parquet(path: Path, columns: tuple[str, str]) -> pd.DataFrame:
    """The file's rows; `columns` (text, label) stored as binary (as Spark writes strings) are
    decoded as UTF-8, not kept as bytes whose `b'...'` repr would be trained on."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read Parquet ({exc})") from None
    for name in [c for c in columns if c in frame.columns]:
        frame[name] = [_utf8(v, f"{path}: column {name!r}", i) for i, v in enumerate(frame[name])]
    return frame


def _utf8(value: object, where: str, index: int) -> object:
    try:
        return value.decode() if isinstance(value, bytes) else value
    except UnicodeDecodeError as exc:
        why = f"row {index + 1}: {exc.reason}"
        raise DataError(f"{where} holds bytes that are not UTF-8 text ({why})") from None


def read_hf(source: str, config: DatasetConfig) -> pd.DataFrame:
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

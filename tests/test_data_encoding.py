"""`dataset.encoding`: a CSV or JSONL file in another encoding than UTF-8 (a Latin-1 export) is
read as the experiment says, and a file that does not decode says where and how to fix it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.config import DatasetConfig
from harness.data.prepare import load_frame, prepare_data
from harness.errors import DataError
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import write_experiment

_LATIN = [(f"Caf\u00e9 cr\u00e8me number {i}, tr\u00e8s bon", "pos") for i in range(12)] + [
    (f"Na\u00efve and dull, number {i}", "neg") for i in range(12)
]


def _latin1_csv(path: Path) -> Path:
    lines = ["text,label"] + [f'"{text}",{label}' for text, label in _LATIN]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


def test_a_latin1_csv_reads_with_dataset_encoding(tmp_path: Path) -> None:
    path = _latin1_csv(tmp_path / "latin.csv")
    frame = load_frame(DatasetConfig(source=str(path), encoding="latin-1"), Path)
    assert list(zip(frame["text"], frame["label"], strict=True)) == _LATIN


def test_a_latin1_jsonl_reads_with_dataset_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    lines = [json.dumps({"text": t, "label": y}, ensure_ascii=False) for t, y in _LATIN]
    path.write_bytes("\n".join(lines).encode("cp1252"))
    frame = load_frame(DatasetConfig(source=str(path), encoding="cp1252"), Path)
    assert list(frame["text"]) == [t for t, _ in _LATIN]


def test_a_file_that_does_not_decode_names_the_file_offset_line_and_the_field(
    tmp_path: Path,
) -> None:
    path = _latin1_csv(tmp_path / "latin.csv")
    with pytest.raises(DataError) as caught:
        load_frame(DatasetConfig(source=str(path)), Path)
    message = str(caught.value)
    offset = path.read_bytes().index(b"\xe9")
    assert message.startswith(f"{path}: not UTF-8 text"), message
    assert f"offset {offset}" in message and "line 2" in message, message
    assert "dataset.encoding" in message and "latin-1" in message, message


def test_an_unknown_encoding_is_one_clear_error_naming_the_field() -> None:
    for bad in ("latin-9x", "base64"):  # no such codec; a codec that is not for text
        with pytest.raises(ValidationError) as caught:
            DatasetConfig(source="x.csv", encoding=bad)
        assert bad in str(caught.value) and "encoding" in str(caught.value)


def test_the_cli_names_the_field_of_a_bad_encoding(tmp_path: Path) -> None:
    path = write_experiment(
        tmp_path,
        _latin1_csv(tmp_path / "latin.csv"),
        dataset={"source": "latin.csv", "encoding": "latin-9x"},
    )
    assert_clean_error(run_cli("prepare", str(path)), "dataset.encoding", "latin-9x")
    path = write_experiment(tmp_path, _latin1_csv(tmp_path / "latin.csv"))
    assert_clean_error(run_cli("prepare", str(path)), "latin.csv", "dataset.encoding")


def test_an_encoding_for_a_source_it_cannot_apply_to_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    with pytest.raises(DataError, match=r"dataset\.encoding"):
        load_frame(DatasetConfig(source=str(path), encoding="latin-1"), Path)


def test_the_digest_of_a_utf8_file_is_what_it_was(tmp_path: Path) -> None:
    """Pinned before `dataset.encoding` existed (a byte-order mark, CRLF line ends, a quoted
    line break, accents and a dash): a study made then still resumes on the same file."""
    rows = []
    for i in range(12):
        rows.append(f'"Caf\u00e9 cr\u00e8me {i}, tr\u00e8s bon \u2014 na\u00efve",pos')
        rows.append(f'"dull\r\nand long {i}",neg')
    path = tmp_path / "pinned.csv"
    path.write_bytes(("\ufefftext,label\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    for config in (
        DatasetConfig(source=str(path)),
        DatasetConfig(source=str(path), encoding="utf8"),
    ):
        data, _ = prepare_data(config, 13, Path, "unit")
        assert data.digest == "6908124b3c2220cedc3ed0d2c45862a81fe54190abddcddebf1981100fd87c85"


def test_a_utf16_export_is_named_as_utf16_and_reads_with_that_setting(tmp_path: Path) -> None:
    # Found by QA: a spreadsheet's "Unicode text" export (UTF-16 with its byte-order mark) was
    # sent to latin-1 / cp1252, which decode it into NUL-riddled column names instead.
    path = tmp_path / "export.csv"
    lines = ["text\tlabel"] + [f"{text}\t{label}" for text, label in _LATIN]
    path.write_bytes("\n".join(lines).encode("utf-16"))
    with pytest.raises(DataError) as info:
        load_frame(DatasetConfig(source=str(path)), Path)
    assert "UTF-16 byte-order mark" in str(info.value)
    assert "dataset.encoding: utf-16" in str(info.value)
    frame = load_frame(DatasetConfig(source=str(path), encoding="utf-16"), Path)
    assert list(zip(frame["text"], frame["label"], strict=True)) == _LATIN


@pytest.mark.parametrize("name", ["tweets.jsonl", "tweets.json"])
def test_half_an_emoji_escaped_in_json_is_named_by_its_line(tmp_path: Path, name: str) -> None:
    # Found by QA: a tweet cut at 140 UTF-16 units leaves half an emoji, which JSON escapes as
    # "\ud83d" and json.loads reads as a lone surrogate: `harness prepare` died in pyarrow with
    # a traceback ("UnicodeEncodeError: ... surrogates not allowed").
    rows = [{"text": f"tweet number {i}", "label": "ab"[i % 2]} for i in range(30)]
    rows[4]["text"] += " \ud83d"
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        where = f"{path}:5: line 5"
    else:
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
        where = f"{path}: record 5"
    with pytest.raises(DataError) as err:
        load_frame(DatasetConfig(source=str(path)), Path)
    assert str(err.value) == (
        f"{where}: field 'text' holds '\\ud83d', half of a UTF-16 surrogate pair (an emoji or "
        "other character cut in two), which is not text and cannot be written as UTF-8: remove "
        "it or write the whole character"
    )
    experiment = write_experiment(tmp_path, path)
    out = tmp_path / "out"
    assert_clean_error(run_cli("prepare", str(experiment), "--out", str(out)), "'\\ud83d'")
    assert not any(out.iterdir())

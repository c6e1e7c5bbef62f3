"""The JSONL files every hosted backend trains on, in the textbook's two formats.

- chat: system prompt, the text as the user's message, the label as the assistant's answer;
- prompt/completion: the text followed by `PROMPT_SEPARATOR`, the label after a leading space
  (`" 4"`), so the model knows it must start a new token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from harness.data.summary import SPLIT_NAMES, DataReport
from harness.records import PreparedData, Split

PROMPT_SEPARATOR = "\n\n###\n\n"
JsonlFormat = Literal["chat", "prompt_completion"]
FORMATS: tuple[JsonlFormat, ...] = ("chat", "prompt_completion")


def chat_record(text: str, label: str, system_prompt: str) -> dict[str, Any]:
    """One chat-format training example: system prompt, the text as user, the label as assistant."""
    return {
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": text},
            {"role": "assistant", "content": label},
        ]
    }


def prompt_completion_record(text: str, label: str) -> dict[str, str]:
    """One prompt/completion example: text + separator, then the label after a leading space."""
    return {"prompt": text + PROMPT_SEPARATOR, "completion": " " + label}


def write_jsonl(split: Split, path: Path, fmt: JsonlFormat, system_prompt: str) -> Path:
    """Write a split as JSONL: UTF-8, one `json.dumps(..., ensure_ascii=False)` object per line.

    Args:
        split: The examples, written in order.
        path: The file to write (parent directories are created).
        fmt: `chat` or `prompt_completion`.
        system_prompt: The system message of the chat format (unused by prompt_completion).

    Returns:
        `path`.
    """
    pairs = zip(split.texts, split.labels, strict=True)
    if fmt == "chat":
        records = [chat_record(text, label, system_prompt) for text, label in pairs]
    elif fmt == "prompt_completion":
        records = [prompt_completion_record(text, label) for text, label in pairs]
    else:
        raise ValueError(f"fmt must be 'chat' or 'prompt_completion', got {fmt=}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return path


def write_prepared(
    data: PreparedData, report: DataReport, out_dir: Path, system_prompt: str
) -> dict[str, Path]:
    """Write every split in both formats plus `report.json` and `report.md` into `out_dir`.

    Returns:
        The written paths keyed by file name: `train.chat.jsonl`, `train.prompt_completion.jsonl`,
        ... for train, validation and test, then `report.json` and `report.md`.
    """
    paths: dict[str, Path] = {}
    for name, split in zip(SPLIT_NAMES, (data.train, data.validation, data.test), strict=True):
        for fmt in FORMATS:
            file_name = f"{name}.{fmt}.jsonl"
            paths[file_name] = write_jsonl(split, out_dir / file_name, fmt, system_prompt)
    paths["report.json"] = out_dir / "report.json"
    paths["report.json"].write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    paths["report.md"] = out_dir / "report.md"
    paths["report.md"].write_text(report.to_markdown(), encoding="utf-8")
    return paths

"""Training files: format, check before upload, and upload each content only once.

Chat models train on `{"messages": [system, user, assistant]}`; babbage-002 and davinci-002 on
`{"prompt": TEXT + separator, "completion": " " + LABEL}` (`harness.data.prepare` writes both).

An upload is keyed by the SHA-256 of its bytes. The file name embeds the first 12 hex digits
(`harness-<digest12>-train.chat.jsonl`), so a restarted sweep finds the files it uploaded
before in `files.list()` and reuses their ids instead of uploading again; within one process a
digest -> id map (guarded per digest, so two trials never upload the same bytes twice) answers
without a request.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.backends.hosted._tokens import TiktokenCounter
from harness.data.jsonl import PROMPT_SEPARATOR, chat_record, prompt_completion_record
from harness.data.text import normalise_text
from harness.errors import DataError
from harness.records import Split

PURPOSE = "fine-tune"


@dataclass(frozen=True)
class PromptFormat:
    """How texts are put to a model: chat messages or a prompt with the separator."""

    chat: bool
    system_prompt: str

    @property
    def name(self) -> str:
        return "chat" if self.chat else "prompt_completion"

    def record(self, text: str, label: str) -> dict[str, Any]:
        """One training example (of the normalised text, as every request below)."""
        text = normalise_text(text)
        if self.chat:
            return chat_record(text, label, self.system_prompt)
        return prompt_completion_record(text, label)

    def messages(self, text: str, system_prompt: str | None = None) -> list[dict[str, str]]:
        """The chat request for `text`, as trained: system prompt, then the text as user."""
        system = system_prompt if system_prompt is not None else self.system_prompt
        user = normalise_text(text)  # as trained: `harness prepare` normalised every text
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def prompt(self, text: str, preamble: str = "") -> str:
        """The prompt/completion request for `text`, as trained: text and separator."""
        return preamble + normalise_text(text) + PROMPT_SEPARATOR


def jsonl_bytes(split: Split, fmt: PromptFormat) -> bytes:
    """A split as fine-tuning JSONL (UTF-8, one object per line), byte-stable for digests."""
    lines = (
        json.dumps(fmt.record(text, label), ensure_ascii=False) + "\n"
        for text, label in zip(split.texts, split.labels, strict=True)
    )
    return "".join(lines).encode("utf-8")


def check_size(split: Split, minimum: int, name: str) -> None:
    """Raise DataError when a split has fewer than `minimum` examples."""
    if len(split) < minimum:
        raise DataError(f"{name}: {len(split)} examples; fine-tuning needs at least {minimum}")


def check_examples(
    split: Split,
    labels: tuple[str, ...],
    fmt: PromptFormat,
    counter: TiktokenCounter,
    limit: int,
    name: str,
) -> list[int]:
    """Check a split's examples before anything is uploaded; return their token counts.

    Raises:
        DataError: A label outside `labels`, or an example longer than `limit` tokens (the first
            offending example is named).
    """
    known = set(labels)
    for index, label in enumerate(split.labels):
        if label not in known:
            raise DataError(f"{name}: example {index} has label {label!r}, not in {list(labels)}")
    pairs = zip(split.texts, split.labels, strict=True)
    tokens = [counter.example_tokens(fmt.record(text, label)) for text, label in pairs]
    for index, count in enumerate(tokens):
        if count > limit:
            raise DataError(
                f"{name}: example {index} is {count} tokens, over backend.max_tokens_per_example="
                f"{limit} ({split.texts[index][:60]!r}...)"
            )
    return tokens


def digest_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def file_name(content: bytes, role: str, fmt: PromptFormat) -> str:
    """`harness-<digest12>-<role>.<format>.jsonl`: findable again after a restart."""
    return f"harness-{digest_of(content)[:12]}-{role}.{fmt.name}.jsonl"


class FileStore:
    """Uploads fine-tuning files once per content digest and remembers their ids."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client
        self._ids: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.uploads = 0  # how many files this store actually uploaded (for tests and logs)

    def ensure(self, content: bytes, role: str, fmt: PromptFormat) -> str:
        """The id of a file holding exactly `content`: known, found by name, or uploaded now."""
        digest = digest_of(content)
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            if digest in self._ids:
                return self._ids[digest]
            found = self._find(digest, len(content))
            self._ids[digest] = found or self._upload(file_name(content, role, fmt), content)
            return self._ids[digest]

    def _find(self, digest: str, size: int) -> str | None:
        prefix = f"harness-{digest[:12]}-"
        for item in self._client().files.list(purpose=PURPOSE):
            usable = getattr(item, "status", "processed") not in ("error", "deleted")
            if item.filename.startswith(prefix) and item.bytes == size and usable:
                return str(item.id)
        return None

    def _upload(self, name: str, content: bytes) -> str:
        uploaded = self._client().files.create(
            file=(name, content, "application/jsonl"), purpose=PURPOSE
        )
        self.uploads += 1
        return str(uploaded.id)

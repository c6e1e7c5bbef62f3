"""Together AI's REST API over `httpx` (already a dependency of `openai`), and its errors.

Why not the `together` SDK: it pulls in a second HTTP stack and its own retry policy for four
endpoints; a thin client keeps retries (429 / 5xx / dropped connections, `Retry-After`
honoured, exponential backoff) and the never-retried job creation under our control.

The key comes only from `TOGETHER_API_KEY`, sent as `Authorization: Bearer`; it never appears in
an error message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.backends.hosted.config import pinned_endpoint_hint
from harness.backends.together.config import TogetherBackendConfig
from harness.errors import BackendError, ConfigError

KEY_VARIABLE = "TOGETHER_API_KEY"
BASE_URL_VARIABLE = "TOGETHER_BASE_URL"
DEFAULT_BASE_URL = "https://api.together.xyz/v1"
_TRANSIENT = (429, 500, 502, 503, 504)


class TransientError(BackendError):
    """A request that failed in a way a retry may cure (429, 5xx, a dropped connection)."""


class RefusedError(BackendError):
    """A request Together answered with a 4xx other than 401: `status` says which."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def resolve_base_url(config: TogetherBackendConfig) -> str:
    """`backend.base_url`, else `TOGETHER_BASE_URL`, else Together's API."""
    return (config.base_url or os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL).rstrip("/")


class TogetherClient:
    """JSON requests to one Together endpoint with one key; safe to share between threads."""

    def __init__(
        self, config: TogetherBackendConfig, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.config = config
        self.base_url = resolve_base_url(config)
        self._sleep = sleep
        self._http: Any = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        with self._lock:
            if self._http is None:
                import httpx2 as httpx

                key = os.environ.get(KEY_VARIABLE, "").strip()
                if not key:
                    raise ConfigError(
                        f"{KEY_VARIABLE} is not set. The key is read only from the environment: "
                        f"run `export {KEY_VARIABLE}=...` (get a key at "
                        "https://api.together.ai/settings/api-keys)."
                    )
                self._http = httpx.Client(
                    base_url=self.base_url,
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=self.config.request_timeout,
                )
            return self._http

    def request(
        self, method: str, path: str, action: str, retries: int | None = None, **kwargs: Any
    ) -> Any:
        """The decoded JSON reply of `method path`, retried on transient failures.

        Raises:
            ConfigError: The key is missing or rejected (401).
            TransientError: Still 429 / 5xx / unreachable after `retries` (default
                `max_retries`) retries.
            RefusedError: Any other refusal (`status`), with the server's message.
        """
        import httpx2 as httpx

        retries = self.config.max_retries if retries is None else retries
        delay = 0.5
        for attempt in range(retries + 1):
            try:
                reply = self._client().request(method, path, **kwargs)
            except httpx.TransportError as exc:
                pinned = pinned_endpoint_hint(BASE_URL_VARIABLE) if self.config.base_url else ""
                failure: TransientError = TransientError(
                    f"{action}: cannot reach {self.base_url} ({type(exc).__name__}){pinned}"
                )
                wait = delay
            else:
                if reply.status_code not in _TRANSIENT:
                    return _decoded(reply, action)
                failure = TransientError(f"{action}: {_describe(reply)}")
                wait = float(reply.headers.get("retry-after") or delay)
            if attempt == retries:
                raise failure
            self._sleep(min(wait, 30.0))
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _describe(reply: Any) -> str:
    try:
        error = reply.json().get("error") or {}
        message = error.get("message") or reply.text[:300]
    except ValueError:
        message = reply.text[:300]
    # A reply may quote the key (OpenAI's 401 does): never into a message, MLflow or the study.
    key = os.environ.get(KEY_VARIABLE, "").strip()
    text = f"HTTP {reply.status_code}: {message}"
    return text.replace(key, "***") if key else text


def _decoded(reply: Any, action: str) -> Any:
    if reply.status_code == 401:
        raise ConfigError(f"{action}: Together rejected {KEY_VARIABLE} ({_describe(reply)})")
    if reply.status_code >= 400:
        raise RefusedError(f"{action}: {_describe(reply)}", reply.status_code)
    return reply.json() if reply.content else {}

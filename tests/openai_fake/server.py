"""A stateful fake of the OpenAI HTTP API on 127.0.0.1, for driving the real ``openai`` SDK.

Example::

    with FakeOpenAI(job_duration=0.2) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        ...
        server.state.count("POST", "/fine_tuning/jobs")  # how many jobs were created

Every request is authenticated, recorded, checked against the fault plan, handled, and, when
``validate`` is on, its JSON reply is checked against OpenAI's OpenAPI document. A reply that does
not match is replaced by a 500 and recorded in ``state.errors``; leaving the ``with`` block (or the
``openai_fake`` fixture) then raises, so the fake cannot drift from the spec unnoticed.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import ApiError
from .handlers import ApiRequest, Reply, parse_multipart, route
from .objects import FakeConfig, RecordedRequest
from .schema import errors_for
from .state import FakeState

__all__ = ["FakeOpenAI"]

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_BAD_KEY = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."


class FakeOpenAI:
    """The fake server: start it, point the SDK at :attr:`base_url`, steer it through :attr:`state`.

    Args:
        config: All options at once; or pass :class:`FakeConfig` fields as keyword arguments
            (``job_duration``, ``clock``, ``validate``, ``seed``, ``api_key``, ...).
    """

    def __init__(self, config: FakeConfig | None = None, /, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either a FakeConfig or keyword options, not both")
        self.config = config or FakeConfig(**options)
        self.state = FakeState(self.config)
        self._httpd: _Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``openai.OpenAI(base_url=...)``."""
        if self._httpd is None:
            raise RuntimeError(
                "the fake OpenAI server is not running; use `with FakeOpenAI() as server:`"
            )
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        """Listen on an ephemeral port of 127.0.0.1 and serve from a daemon thread."""
        if self._httpd is not None:
            return self
        if self.state.validate:
            errors_for("ErrorResponse", {})  # parse the spec now, not inside the first request
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self.state)
        serve = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._threads = [serve]
        if self.config.idle_timeout is not None:
            self._threads.append(threading.Thread(target=self._watch_idle, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.halt()
        for thread in self._threads:
            thread.join(timeout=5)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (``stop()`` or ``idle_timeout``); False on timeout."""
        httpd = self._httpd
        return True if httpd is None else httpd.stopping.wait(timeout)

    def raise_errors(self) -> None:
        """Raise ``AssertionError`` if any reply broke the spec or a handler crashed."""
        self.state.raise_errors()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.raise_errors()

    def _watch_idle(self) -> None:
        httpd, limit = self._httpd, self.config.idle_timeout
        assert httpd is not None and limit is not None
        while not httpd.stopping.wait(min(1.0, limit / 4)):
            if time.monotonic() - httpd.last_activity > limit:
                httpd.halt()
                return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], state: FakeState
    ) -> None:
        super().__init__(address, handler)
        self.state = state
        self.last_activity = time.monotonic()
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def track(self, connection: socket.socket, *, opened: bool) -> None:
        """Remember open connections, so :meth:`halt` can close kept-alive ones too."""
        with self._lock:
            if opened:
                self.connections.add(connection)
            else:
                self.connections.discard(connection)

    def halt(self) -> None:
        """Stop accepting, close the port, and hang up on every open connection (idempotent)."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        with self._lock:
            connections, self.connections = list(self.connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer each reply into one write (flushed by http.server after every request): headers and
    # body sent apart cost ~40 ms a request on a kept-alive connection (Nagle + delayed ACK).
    wbufsize = -1
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, opened=True)

    def finish(self) -> None:
        self.server.track(self.connection, opened=False)
        super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        state = self.server.state
        self.server.last_activity = time.monotonic()
        url = urlsplit(self.path)
        query = parse_qsl(url.query, keep_blank_values=True)
        content_type = self.headers.get("content-type", "")
        request = ApiRequest(self.command, url.path, query, content_type, self._read_body())
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        record = RecordedRequest(
            request.method, request.path, dict(query), headers, _summary(request)
        )
        with state.lock:
            state.requests.append(record)
        reply = _answer(state, request, self.headers.get("authorization"))
        record.status = reply.status
        if state.latency > 0:
            time.sleep(state.latency)  # releases the GIL: concurrent requests wait together
        self._send(reply)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, reply: Reply) -> None:
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _answer(state: FakeState, request: ApiRequest, authorization: str | None) -> Reply:
    """Authenticate, apply the fault plan, handle, then check the reply against the spec."""
    try:
        _authenticate(state, authorization)
        fault = state.take_fault(request.method, request.path)
        if fault is not None:
            raise fault
        reply = route(state, request)
        lost = state.take_lost_reply(request.method, request.path)
        if lost is not None:  # handled (and committed), but the client sees an error
            raise lost
    except ApiError as error:
        reply = Reply(error.body(), "ErrorResponse", error.status, headers=error.headers)
    except Exception:  # a bug in the fake or in a test's oracle: fail loudly at teardown
        state.record_error(f"{request.method} {request.path} crashed:\n{traceback.format_exc()}")
        return _server_error("The fake OpenAI server crashed; see state.errors.")
    mutate = state.take_tamper(request.method, request.path)
    if mutate is not None and reply.content_type == "application/json":
        reply.body = mutate(reply.body)
    if state.validate and reply.schema is not None:
        problems = errors_for(reply.schema, reply.body)
        if problems:
            state.record_error(
                f"{request.method} {request.path}: reply does not match {reply.schema}:\n  "
                + "\n  ".join(problems)
            )
            return _server_error(
                f"The fake's reply broke OpenAI's {reply.schema} schema; see state.errors."
            )
    return reply


def _authenticate(state: FakeState, authorization: str | None) -> None:
    match = re.fullmatch(r"Bearer\s+(\S+)\s*", authorization or "")
    if match is None:
        raise ApiError(401, _NO_KEY)
    if state.config.api_key is not None and match.group(1) != state.config.api_key:
        raise ApiError(401, _BAD_KEY, code="invalid_api_key")


def _server_error(message: str) -> Reply:
    body = ApiError(500, message, type="server_error").body()
    return Reply(body, None, 500, headers={"x-should-retry": "false"})


def _summary(request: ApiRequest) -> Any:
    """The request body for the record: JSON as parsed, uploads without their bytes."""
    if not request.raw:
        return None
    if request.content_type.startswith("multipart/form-data"):
        try:
            fields = parse_multipart(request.raw, request.content_type)
        except ApiError:
            return None
        return {
            name: {"filename": filename, "bytes": len(data)}
            if filename is not None
            else data.decode("utf-8", "replace")
            for name, (filename, data) in fields.items()
        }
    try:
        return json.loads(request.raw)
    except ValueError:
        return request.raw[:1000].decode("utf-8", "replace")

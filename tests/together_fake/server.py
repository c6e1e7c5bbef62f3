"""A stateful fake of Together AI's fine-tuning API on 127.0.0.1, checked against its OpenAPI.

Serves `/v1/files` (list), `/v1/files/upload`, `/v1/fine-tunes` (create, list),
`/v1/fine-tunes/estimate-price`, `/v1/fine-tunes/{id}` (+ `/events`, `/checkpoints`,
`/cancel`), `/v1/endpoints` (create, list; get and delete by id), `/v1/hardware` (list) and
`/v1/chat/completions`.
Every JSON reply, and the create-job and chat requests, are validated against the components of
Together's published
OpenAPI document kept in `openapi.yaml` here (`spec.py`); a reply that breaks it becomes a 500
and is recorded in `state.errors`, and leaving the `with` block raises.

Jobs run on the wall clock: pending, queued, running, uploading, then completed after
`job_duration` seconds, with `token_count` = round(words x 1.3) of the training file (one epoch),
`n_checkpoints` checkpoints evenly spaced in steps, and `model_output_name`
`harness-test/<model>-<suffix>-<6 hex>`; a checkpoint is callable as `<output name>:<step>`.
Prices: a quote and a finished job's `total_price` are tokens x `state.price_per_token` (0 by
default); a quote over `state.user_limit` is not allowed to proceed. Dedicated endpoints start
after `state.endpoint_start` seconds (PENDING, STARTING, STARTED; ERROR for the next
`state.failing_endpoints`), answer chat completions by their `name` while STARTED, and are gone
once deleted; `state.serverless_lora = False` refuses fine-tuned models called by name.
Faults: `state.fail_next(method, path_glob, status, after=False, rate=1.0, count=1)` (with
`after=True` the request is handled, then answered with the error). Nothing it returns is a result.
"""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tests.openai_fake.handlers import parse_multipart

from .spec import errors_for
from .state import ApiError, Endpoint, Job, TogetherState, _iso


def _training_lines(state: TogetherState, body: dict[str, Any]) -> list[dict[str, Any]]:
    content = state.contents.get(str(body.get("training_file")))
    if content is None:
        raise ApiError(400, f"training_file {body.get('training_file')} does not exist")
    if body.get("model") not in state.base_models:
        raise ApiError(400, f"model {body.get('model')} is not available for fine-tuning")
    return [json.loads(line) for line in content.decode().splitlines() if line.strip()]


def _tokens(lines: list[dict[str, Any]]) -> int:
    return round(sum(len(m["content"].split()) for line in lines for m in line["messages"]) * 1.3)


def quote(state: TogetherState, body: dict[str, Any]) -> dict[str, Any]:
    tokens = _tokens(_training_lines(state, body))
    price = state.job_price(tokens, body)
    reply: dict[str, Any] = {
        "estimated_total_price": price,
        "allowed_to_proceed": state.user_limit is None or price <= state.user_limit,
        "estimated_train_token_count": tokens * int(body.get("n_epochs", 1)),
        "estimated_eval_token_count": 0,
    }
    with state.lock:
        state.quotes.append(body)
    return reply | ({} if state.user_limit is None else {"user_limit": state.user_limit})


def create_endpoint(state: TogetherState, body: dict[str, Any]) -> dict[str, Any]:
    if body["hardware"] not in state.hardware:
        known = ", ".join(sorted(state.hardware))
        raise ApiError(400, f"hardware {body['hardware']} is not available (available: {known})")
    if state.trained_labels(str(body["model"])) is None:
        raise ApiError(404, f"model {body['model']} not found", "model_not_available")
    with state.lock:
        endpoint_id = f"endpoint-{uuid.UUID(int=state._rng.getrandbits(128))}"
        short = str(body["model"]).split("/")[-1]
        fails = state.failing_endpoints > 0
        state.failing_endpoints -= fails
        endpoint = Endpoint(
            body,
            endpoint_id,
            f"harness-test-endpoints/{short}-{endpoint_id[-8:]}",
            time.monotonic(),
            time.time(),
            state.endpoint_start,
            fails,
        )
        state.endpoints[endpoint_id] = endpoint
    return state.endpoint_object(endpoint)


def _endpoints(state: TogetherState, method: str, rest: list[str], raw: bytes) -> tuple[Any, str]:
    if method == "POST" and not rest:
        body = json.loads(raw)
        _check(state, "CreateEndpointRequest", body)
        return create_endpoint(state, body), "DedicatedEndpoint"
    if method == "GET" and not rest:
        listed = [state.endpoint_object(e, listed=True) for e in state.live_endpoints()]
        return {"object": "list", "data": listed}, "ListEndpointsResponse"
    endpoint = state.endpoints.get(rest[0])
    if endpoint is None or endpoint.deleted is not None or len(rest) > 1:
        raise ApiError(404, f"endpoint {rest[0]} not found")
    if method == "GET":
        return state.endpoint_object(endpoint), "DedicatedEndpoint"
    if method == "DELETE":
        with state.lock:
            endpoint.deleted = time.monotonic()
        return None, ""  # 204 No Content
    raise ApiError(404, f"no route {method} /endpoints/{rest[0]}")


def create_job(state: TogetherState, body: dict[str, Any]) -> dict[str, Any]:
    lines = _training_lines(state, body)
    labels = sorted({line["messages"][-1]["content"] for line in lines})
    epochs, n_ckpt = int(body.get("n_epochs", 1)), int(body.get("n_checkpoints", 1))
    batch = body.get("batch_size", 8)
    steps = math.ceil(len(lines) / (batch if isinstance(batch, int) else 8)) * epochs
    with state.lock:
        job_id = f"ft-{uuid.UUID(int=state._rng.getrandbits(128))}"
        job = Job(
            body,
            job_id,
            time.monotonic(),
            len(lines),
            _tokens(lines),
            tuple(labels),
            state.job_duration,
        )
        short = str(body["model"]).split("/")[-1]
        job.output = f"harness-test/{short}-{body.get('suffix', '')}-{job_id[-6:]}"
        job.checkpoints = [round(steps * (i + 1) / n_ckpt) for i in range(min(n_ckpt, steps))]
        state.jobs[job_id] = job
    return state.job_object(job, truncated=True)


def chat(state: TogetherState, body: dict[str, Any]) -> dict[str, Any]:
    model = str(body.get("model"))
    labels = state.model_labels(model)
    if labels is None:
        raise ApiError(404, f"Unable to access model {model}.", "model_not_available")
    text = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    answer = state.oracle(model, text) if state.oracle else {y: 1 / len(labels) for y in labels}
    ranked = sorted(answer.items(), key=lambda item: -item[1])
    k = int(body.get("logprobs") or 0)
    top = {label: math.log(p) if p > 0 else -9999.0 for label, p in ranked[:k]}
    words = sum(len(str(m["content"]).split()) for m in body["messages"])
    logprobs = {"tokens": [ranked[0][0]], "token_logprobs": [top.get(ranked[0][0], 0.0)]}
    return {
        "id": uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "prompt": [],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": ranked[0][0]},
                "logprobs": {**logprobs, "top_logprobs": top} if k else logprobs,
            }
        ],
        "usage": {
            "prompt_tokens": round(words * 1.3),
            "completion_tokens": 1,
            "total_tokens": round(words * 1.3) + 1,
        },
    }


def route(
    state: TogetherState, method: str, path: str, raw: bytes, ctype: str
) -> tuple[Any, str | None]:
    """(body, schema name) for a request; ApiError for a refusal."""
    parts = path.removeprefix("/v1").strip("/").split("/")
    if method == "POST" and parts == ["files", "upload"]:
        fields = parse_multipart(raw, ctype)
        if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"fine-tune":
            raise ApiError(400, "file and purpose=fine-tune are required")
        name, data = fields["file"]
        with state.lock:
            file_id = f"file-{uuid.UUID(int=state._rng.getrandbits(128))}"
            state.contents[file_id] = data
            state.files[file_id] = {
                "id": file_id,
                "object": "file",
                "created_at": int(time.time()),
                "filename": fields.get("file_name", (None, (name or "").encode()))[1].decode(),
                "bytes": len(data),
                "purpose": "fine-tune",
                "FileType": "jsonl",
                "Processed": True,
            }
        return state.files[file_id], "FileResponse"
    if method == "GET" and parts == ["files"]:
        return {"data": list(state.files.values())}, "FileList"
    if method == "POST" and parts == ["fine-tunes", "estimate-price"]:
        body = json.loads(raw)
        _check(state, "FineTuneEstimatePriceRequest", body)
        return quote(state, body), "FineTuneEstimatePriceResponse"
    if parts[:1] == ["fine-tunes"]:
        return _fine_tunes(state, method, parts[1:], raw)
    if parts[:1] == ["endpoints"]:
        return _endpoints(state, method, parts[1:], raw)
    if method == "GET" and parts == ["hardware"]:
        # Not in the kept OpenAPI subset: the shape Together documents (as tests/prices_fake).
        listed = [
            {"object": "hardware", "id": h, "pricing": {"cents_per_minute": 5.5}}
            for h in sorted(state.hardware)
        ]
        return {"object": "list", "data": listed}, None
    if method == "POST" and parts == ["chat", "completions"]:
        body = json.loads(raw)
        _check(state, "ChatCompletionRequest", body)
        return chat(state, body), "ChatCompletionResponse"
    raise ApiError(404, f"no route {method} {path}")


def _fine_tunes(state: TogetherState, method: str, rest: list[str], raw: bytes) -> tuple[Any, str]:
    if method == "POST" and not rest:
        body = json.loads(raw)
        _check(state, "CreateFineTuneRequest", body)
        return create_job(state, body), "FinetuneResponseTruncated"
    if method == "GET" and not rest:
        jobs = [state.job_object(job, truncated=True) for job in state.jobs.values()]
        return {"data": jobs}, "FinetuneTruncatedList"
    job = state.jobs.get(rest[0])
    if job is None:
        raise ApiError(404, f"fine-tune job {rest[0]} not found")
    if method == "GET" and len(rest) == 1:
        return state.job_object(job), "FinetuneResponse"
    if method == "POST" and rest[1:] == ["cancel"]:
        job.cancelled = True
        return state.job_object(job, truncated=True), "FinetuneResponseTruncated"
    if method == "GET" and rest[1:] == ["events"]:
        done = state.status(job) == "completed"
        events = [state._event(job, "job_start", "Job started")]
        events += [
            state._event(job, "checkpoint_save", "saved", s) for s in job.checkpoints if done
        ]
        return {"data": events}, "FinetuneListEvents"
    if method == "GET" and rest[1:] == ["checkpoints"]:
        done = state.status(job) == "completed"
        last = job.checkpoints[-1] if job.checkpoints else 0
        items = [
            {
                "step": s,
                "path": f"{job.output}:{s}",
                "created_at": _iso(time.time()),
                "checkpoint_type": "Final" if s == last else "Intermediate",
            }
            for s in (job.checkpoints if done else [])
        ]
        return {"data": items[::-1]}, "FinetuneListCheckpoints"
    raise ApiError(404, f"no route {method} /fine-tunes/{'/'.join(rest)}")


def _check(state: TogetherState, schema: str, body: Any) -> None:
    problems = errors_for(schema, body)
    if problems:
        raise ApiError(400, f"request does not match {schema}: {problems[0]}")


class FakeTogether:
    """Start with `with FakeTogether() as server:`; point the backend at `server.base_url`."""

    def __init__(self, job_duration: float = 0.5, api_key: str | None = None) -> None:
        self.state = TogetherState(job_duration, api_key)
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "not running"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeTogether:
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._serve()

            do_POST = do_DELETE = do_GET

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                path = urlsplit(self.path).path
                status, body = _answer(state, self.command, path, raw, self.headers)
                with state.lock:
                    state.requests.append((self.command, path, status))
                payload = b"" if status == 204 else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if kind is None and self.state.errors:
            raise AssertionError(
                "the fake Together server broke its spec:\n" + "\n".join(self.state.errors)
            )


def _answer(
    state: TogetherState, method: str, path: str, raw: bytes, headers: Any
) -> tuple[int, Any]:
    token = (headers.get("authorization") or "").removeprefix("Bearer ").strip()
    if not token or (state.api_key is not None and token != state.api_key):
        return 401, {"error": {"message": "Invalid API key provided", "type": "invalid_api_key"}}
    before = state.take_fault(method, path, after=False)
    if before is not None:
        return before, {"error": {"message": f"injected {before}", "type": "server_error"}}
    try:
        body, schema = route(state, method, path, raw, headers.get("content-type", ""))
    except ApiError as error:
        return error.status, error.body
    except Exception:
        state.errors.append(f"{method} {path} crashed:\n{traceback.format_exc()}")
        return 500, {"error": {"message": "the fake crashed", "type": "server_error"}}
    if schema:
        problems = errors_for(schema, body)
        if problems:
            state.errors.append(f"{method} {path}: reply breaks {schema}: {problems}")
            return 500, {"error": {"message": "reply broke the spec", "type": "server_error"}}
    after = state.take_fault(method, path, after=True)
    if after is not None:  # handled and committed, but the client sees an error
        return after, {"error": {"message": f"injected {after}", "type": "server_error"}}
    return (204, None) if body is None else (200, body)

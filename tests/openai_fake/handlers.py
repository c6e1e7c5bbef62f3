"""HTTP routes of the fake: parse a request, ask the state, shape the reply.

Each route names the OpenAPI component its 200 body must match; the server checks it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import TRAINING_NOT_AVAILABLE, ApiError
from .objects import ModelInfo
from .schema import errors_for
from .state import FakeState
from .training import approx_tokens

__all__ = ["ApiRequest", "Reply", "parse_multipart", "route"]


@dataclass
class ApiRequest:
    """A parsed HTTP request (path parameters filled in by :func:`route`)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    content_type: str
    raw: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        """The JSON object body (400 like OpenAI if it is not one)."""
        try:
            body = json.loads(self.raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request. It must be a JSON object."
            raise ApiError(400, message)
        return body

    def arg(self, name: str) -> str | None:
        """Last value of query parameter ``name``."""
        values = [value for key, value in self.query if key == name]
        return values[-1] if values else None

    def int_arg(self, name: str, default: int) -> int:
        """Integer query parameter (400 if not an integer >= 1)."""
        value = self.arg(name)
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1:
            message = f"Invalid value for '{name}': expected a positive integer, got {value!r}."
            raise ApiError(400, message, param=name)
        return int(value)


@dataclass
class Reply:
    """What the server sends back; ``schema`` names the component a JSON body must match."""

    body: Any
    schema: str | None
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[FakeState, ApiRequest], Reply]
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def _route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        regex = re.compile("^/v1" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        _ROUTES.append((method, regex, handler))
        return handler

    return register


def _nebius_models(state: FakeState, request: ApiRequest) -> Reply:
    """Nebius's models API (`GET /v0/models`), only in the nebius dialect."""
    if state.config.dialect != "nebius":
        raise ApiError(404, f"Invalid URL ({request.method} {request.path})")
    prices = state.config.nebius_training_prices
    data = []
    for model in sorted({*state.config.base_models.values(), *prices}):
        price = prices.get(model, 0.4)
        flavour = {
            "name": "base",
            "pricing": {
                "input_price_per_million_tokens": 0.02,
                "output_price_per_million_tokens": 0.06,
            },
        }
        tune = None if price is None else {"training_price_per_million_tokens": price}
        data.append({"id": model, "object": "model", "fine_tune": tune, "flavours": [flavour]})
    return Reply({"object": "list", "data": data}, None)


_ROUTES.append(("GET", re.compile("^/v0/models$"), _nebius_models))


def route(state: FakeState, request: ApiRequest) -> Reply:
    """Dispatch ``request`` to its handler (404 ``Invalid URL`` like OpenAI if there is none)."""
    for method, regex, handler in _ROUTES:
        match = regex.match(request.path)
        if match and method == request.method:
            request.params = match.groupdict()
            return handler(state, request)
    raise ApiError(404, f"Invalid URL ({request.method} {request.path})")


def _check_request(state: FakeState, schema: str, body: dict[str, Any]) -> None:
    if not state.validate:
        return
    problems = errors_for(schema, body)
    if problems:
        where, _, why = problems[0].partition(": ")
        message = f"Invalid request body ({schema}) at {where}: {why}"
        raise ApiError(400, message, param=None if where == "$" else where.removeprefix("$."))


def _page(
    items: list[dict[str, Any]], request: ApiRequest, default_limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Cursor pagination: items after the ``after`` id, at most ``limit`` of them."""
    after, limit = request.arg("after"), request.int_arg("limit", default_limit)
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            message = f"Invalid value for 'after': no object with id {after}."
            raise ApiError(400, message, param="after")
        items = items[ids.index(after) + 1 :]
    return items[:limit], len(items) > limit


# -- files ---------------------------------------------------------------------------------------


def parse_multipart(raw: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """``{field: (filename or None, bytes)}`` from a ``multipart/form-data`` body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise ApiError(400, "Expected a multipart/form-data body.")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in raw.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode("utf-8", "replace")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name:
            value = data.removesuffix(b"\r\n")
            fields[name.group(1)] = (filename.group(1) if filename else None, value)
    return fields


@_route("POST", "/files")
def _create_file(state: FakeState, request: ApiRequest) -> Reply:
    fields = parse_multipart(request.raw, request.content_type)
    if "file" not in fields or fields["file"][0] is None:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file")
    purpose = fields.get("purpose", (None, b""))[1].decode()
    allowed = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
    if purpose not in allowed:
        message = f"Invalid value for 'purpose': {purpose!r}; expected one of {', '.join(allowed)}."
        raise ApiError(400, message, param="purpose")
    filename, content = fields["file"]
    return Reply(state.add_file(filename or "upload", purpose, content), "OpenAIFile")


@_route("GET", "/files")
def _list_files(state: FakeState, request: ApiRequest) -> Reply:
    order = request.arg("order") or "desc"
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid value for 'order': {order!r}.", param="order")
    files, has_more = _page(state.list_files(request.arg("purpose"), order), request, 10_000)
    # The spec types first_id/last_id as (non-null) strings, so an empty page carries "".
    first, last = (files[0]["id"], files[-1]["id"]) if files else ("", "")
    body = {"object": "list", "data": files, "first_id": first, "last_id": last}
    return Reply(body | {"has_more": has_more}, "ListFilesResponse")


@_route("GET", "/files/{file_id}")
def _retrieve_file(state: FakeState, request: ApiRequest) -> Reply:
    return Reply(state.file_object(request.params["file_id"]), "OpenAIFile")


@_route("DELETE", "/files/{file_id}")
def _delete_file(state: FakeState, request: ApiRequest) -> Reply:
    return Reply(state.delete_file(request.params["file_id"]), "DeleteFileResponse")


@_route("GET", "/files/{file_id}/content")
def _file_content(state: FakeState, request: ApiRequest) -> Reply:
    # Like the real API (and unlike the spec's "application/json string"): the raw bytes.
    content = state.file_content(request.params["file_id"])
    return Reply(content, None, content_type="application/octet-stream")


# -- fine-tuning jobs ----------------------------------------------------------------------------


@_route("POST", "/fine_tuning/jobs")
def _create_job(state: FakeState, request: ApiRequest) -> Reply:
    body = request.json()
    if state.refuse_training:  # refused before the body is even looked at
        raise ApiError(403, TRAINING_NOT_AVAILABLE, code="training_not_available")
    _check_request(state, "CreateFineTuningJobRequest", body)
    if state.config.dialect == "nebius":
        body = _nebius_job_body(state, body)
    for key in ("model", "training_file"):
        if not isinstance(body.get(key), str):
            raise ApiError(400, f"Missing required parameter: '{key}'.", param=key)
    _check_job_options(body)
    return Reply(state.create_job(body), "FineTuningJob")


# The create body Nebius documents (`POST /v1/fine_tuning/jobs`, docs.tokenfactory.nebius.com).
NEBIUS_JOB_FIELDS = frozenset(
    {
        *("model", "training_file", "from_checkpoint", "validation_file", "hyperparameters"),
        *("method", "integrations", "seed", "suffix", "tags", "extra_body"),
    }
)


def _nebius_job_body(state: FakeState, body: dict[str, Any]) -> dict[str, Any]:
    """Nebius keeps only the fields it documents (a `metadata` sent to it is lost), and its
    `suffix` is 64 characters at most (422 otherwise)."""
    dropped = sorted(set(body) - NEBIUS_JOB_FIELDS)
    state.dropped_fields.extend(dropped)
    if len(str(body.get("suffix") or "")) > 64:
        raise ApiError(422, "suffix: String should have at most 64 characters", param="suffix")
    return {key: value for key, value in body.items() if key in NEBIUS_JOB_FIELDS}


def _check_job_options(body: dict[str, Any]) -> None:
    """What OpenAI checks beyond the schema (and what this fake does not simulate)."""
    metadata = body.get("metadata") or {}
    too_long = any(len(str(k)) > 64 or len(str(v)) > 512 for k, v in metadata.items())
    if len(metadata) > 16 or too_long:
        message = "Invalid 'metadata': at most 16 pairs, keys up to 64 and values up to 512 chars."
        raise ApiError(400, message, param="metadata")
    method = body.get("method") or {}
    if method and method.get("type") != "supervised":
        message = (
            f"This fake only runs supervised fine-tuning, got method.type={method.get('type')!r}"
        )
        raise ApiError(400, message, param="method.type")
    if (method.get("supervised") or {}).get("hyperparameters") and body.get("hyperparameters"):
        message = (
            "Give hyperparameters in method.supervised.hyperparameters or at the top, not both."
        )
        raise ApiError(400, message, param="hyperparameters")


@_route("GET", "/fine_tuning/jobs")
def _list_jobs(state: FakeState, request: ApiRequest) -> Reply:
    wanted = {}
    for key, value in request.query:
        match = re.fullmatch(r"metadata\[(.+)\]", key)
        if match:
            wanted[match.group(1)] = value
    jobs = state.list_jobs(wanted, null_metadata=request.arg("metadata") == "null")
    page, has_more = _page(jobs, request, 20)
    body = {"object": "list", "data": page, "has_more": has_more}
    return Reply(body, "ListPaginatedFineTuningJobsResponse")


@_route("GET", "/fine_tuning/jobs/{job_id}")
def _retrieve_job(state: FakeState, request: ApiRequest) -> Reply:
    return Reply(state.job_object(request.params["job_id"]), "FineTuningJob")


@_route("POST", "/fine_tuning/jobs/{job_id}/cancel")
def _cancel_job(state: FakeState, request: ApiRequest) -> Reply:
    return Reply(state.cancel_job(request.params["job_id"]), "FineTuningJob")


@_route("GET", "/fine_tuning/jobs/{job_id}/events")
def _list_events(state: FakeState, request: ApiRequest) -> Reply:
    page, has_more = _page(state.job_events(request.params["job_id"]), request, 20)
    body = {"object": "list", "data": page, "has_more": has_more}
    return Reply(body, "ListFineTuningJobEventsResponse")


@_route("GET", "/fine_tuning/jobs/{job_id}/checkpoints")
def _list_checkpoints(state: FakeState, request: ApiRequest) -> Reply:
    page, has_more = _page(state.job_checkpoints(request.params["job_id"]), request, 10)
    first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
    body = {"object": "list", "data": page, "first_id": first, "last_id": last}
    return Reply(body | {"has_more": has_more}, "ListFineTuningJobCheckpointsResponse")


# -- inference -----------------------------------------------------------------------------------


def _callable_model(state: FakeState, model_id: Any, *, chat: bool) -> ModelInfo:
    info = state.model_info(model_id) if isinstance(model_id, str) else None
    if info is None:
        message = f"The model `{model_id}` does not exist or you do not have access to it."
        raise ApiError(404, message, code="model_not_found")
    if info.chat != chat:
        message = (
            "This is not a chat model and thus not supported in the v1/chat/completions endpoint. "
            "Did you mean to use v1/completions?"
            if chat
            else "This is a chat model and not supported in the v1/completions endpoint. "
            "Did you mean to use v1/chat/completions?"
        )
        raise ApiError(404, message, param="model")
    return info


def _ranked_answers(state: FakeState, model_id: str, prompt_text: str) -> list[tuple[str, float]]:
    """Ask the oracle (outside the lock) and rank its labels, most probable first."""
    answer = state.oracle()(model_id, prompt_text)
    if not isinstance(answer, Mapping) or not answer:
        raise TypeError(f"label oracle must return a non-empty mapping, got {answer!r}")
    for label, probability in answer.items():
        if not isinstance(label, str) or not label or not 0.0 <= float(probability) <= 1.0:
            raise TypeError(f"label oracle returned a bad entry {label!r}: {probability!r}")
    return sorted(((label, float(p)) for label, p in answer.items()), key=lambda item: -item[1])


def _logprob(probability: float) -> float:
    return math.log(probability) if probability > 0 else -9999.0


def _check_max_tokens(body: dict[str, Any]) -> None:
    for key in ("max_tokens", "max_completion_tokens"):
        if body.get(key) is not None and body[key] < 1:
            raise ApiError(400, f"Invalid '{key}': integer below minimum value 1.", param=key)


def _usage(prompt_text: str, choices: int) -> dict[str, int]:
    prompt_tokens = max(1, approx_tokens(prompt_text))
    total = prompt_tokens + choices
    return {"prompt_tokens": prompt_tokens, "completion_tokens": choices, "total_tokens": total}


def _chat_prompt_text(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """(last user message text, all message text) of a chat request."""
    texts: list[tuple[str, str]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        texts.append((message.get("role", ""), content if isinstance(content, str) else ""))
    user = [text for role, text in texts if role == "user"]
    return (user[-1] if user else ""), "\n".join(text for _, text in texts)


@_route("POST", "/chat/completions")
def _chat_completions(state: FakeState, request: ApiRequest) -> Reply:
    body = request.json()
    _check_request(state, "CreateChatCompletionRequest", body)
    info = _callable_model(state, body.get("model"), chat=True)
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        message = "Invalid value for 'top_logprobs': 'logprobs' must be set to true."
        raise ApiError(400, message, param="top_logprobs")
    if body.get("stream"):
        raise ApiError(400, "This fake does not stream; call without stream=True.", param="stream")
    _check_max_tokens(body)
    question, everything = _chat_prompt_text(body["messages"])
    ranked = _ranked_answers(state, info.model_id, question)
    label, probability = ranked[0]
    logprobs = None
    if body.get("logprobs"):
        top = [_chat_token(token, p, None) for token, p in ranked[: body.get("top_logprobs") or 0]]
        logprobs = {"content": [_chat_token(label, probability, top)], "refusal": None}
    answer: dict[str, Any] = {"role": "assistant", "content": label, "refusal": None}
    answer["annotations"] = []
    n = body.get("n") or 1
    choice = {"message": answer, "logprobs": logprobs, "finish_reason": "stop"}
    usage = _usage(everything, n) | {
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    response = {
        "id": state.new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _served_name(state, info),
        "choices": [{"index": i, **choice} for i in range(n)],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_fake0openai",
    }
    return Reply(response, "CreateChatCompletionResponse")


def _chat_token(token: str, probability: float, top: list[dict[str, Any]] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"token": token, "logprob": _logprob(probability)}
    entry["bytes"] = list(token.encode())
    if top is not None:
        entry["top_logprobs"] = top
    return entry


@_route("POST", "/completions")
def _completions(state: FakeState, request: ApiRequest) -> Reply:
    body = request.json()
    _check_request(state, "CreateCompletionRequest", body)
    info = _callable_model(state, body.get("model"), chat=False)
    prompts = body.get("prompt")
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        message = "This fake accepts 'prompt' as a string or a list of strings."
        raise ApiError(400, message, param="prompt")
    if body.get("echo") or body.get("stream"):
        raise ApiError(400, "This fake supports neither echo nor stream.", param="echo")
    _check_max_tokens(body)
    n, want = body.get("n") or 1, body.get("logprobs")
    choices: list[dict[str, Any]] = []
    for prompt in prompts:
        ranked = [(_spaced(label), p) for label, p in _ranked_answers(state, info.model_id, prompt)]
        token, probability = ranked[0]
        logprobs = None
        if want is not None:
            logprobs = {
                "tokens": [token],
                "token_logprobs": [_logprob(probability)],
                "top_logprobs": [{label: _logprob(p) for label, p in ranked[:want]}],
                "text_offset": [len(prompt)],
            }
        choice = {"text": token, "logprobs": logprobs, "finish_reason": "stop"}
        choices += [{"index": len(choices) + i, **choice} for i in range(n)]
    response = {
        "id": state.new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": _served_name(state, info),
        "choices": choices,
        "usage": _usage("\n".join(prompts), len(choices)),
        "system_fingerprint": "fp_fake0openai",
    }
    return Reply(response, "CreateCompletionResponse")


def _spaced(label: str) -> str:
    """Prompt/completion models were trained on completions with a leading space."""
    return label if label[:1].isspace() else " " + label


def _served_name(state: FakeState, info: ModelInfo) -> str:
    """Aliases answer with their snapshot name, like the real API."""
    return state.config.base_models.get(info.model_id, info.model_id)

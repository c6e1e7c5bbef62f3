"""A fake Azure OpenAI resource, checked against Azure's own API documents, in front of the
OpenAI fake.

Azure OpenAI speaks a dialect of OpenAI's fine-tuning API. This front enforces what Azure's
documents say (`azure_openapi_subset.json`: data plane 2025-04-01-preview, Resource Manager
2024-10-01; `spec.py` reads them), translates to OpenAI's shapes for `tests.openai_fake.FakeOpenAI`
(which simulates the jobs and the models) and translates the replies back:

- paths under `/openai/`; an `api-version` query parameter on every request (400 without, 400
  for a version this fake has no document for); the key in an `api-key` header (401 otherwise);
- request bodies checked strictly: `POST /fine_tuning/jobs` takes `FineTuningJobCreation`'s
  fields and no others (no `metadata`; hyperparameters top-level, `method` is `{"type": ...}`),
  400 `invalidPayload` naming the field; a `suffix` of at most 40 characters of `a-z A-Z 0-9 - _`;
  `POST /files` needs `purpose` (one of the documented values) and `file`;
- query parameters the document does not list for an operation are not passed on (the job
  listing takes `after` and `limit` only: no metadata filter), and are recorded in `ignored`;
- replies cut to what the document declares (no `metadata` on a job; `suffix` is there), job
  states mapped onto Azure's (`queued`, `validating_files` -> `pending`), creates answered 201,
  errors as `{"error": {"code", "message"}}`; every reply is checked against its schema, and a
  mismatch is recorded in `errors` (leaving the `with` block then raises);
- inference only through a deployment (`/openai/deployments/{name}/chat/completions`), 404
  `DeploymentNotFound` unless it exists and has succeeded; deployments through Resource Manager
  with a bearer token (`arm.py`; `deploy_seconds` makes them slow).

`requests` holds every request (method, path, query, JSON body or form fields) for contract
tests. Nothing it returns is a result.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2

from tests.azure_fake.arm import JSON, DeploymentRecord, Deployments, Reply, error
from tests.azure_fake.spec import errors_for, load_subset, project
from tests.openai_fake import FakeOpenAI
from tests.openai_fake.handlers import parse_multipart

__all__ = ["DeploymentRecord", "FakeAzure"]

API_VERSION = load_subset()["data_plane"]["api_version"]
_ACCOUNT = re.compile(
    r"^(?P<account>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.CognitiveServices/accounts/[^/]+)/deployments(?:/(?P<name>[^/]+))?$"
)
_DEPLOYED = re.compile(
    r"^/openai/deployments/(?P<name>[^/]+)/(?P<rest>chat/completions|completions)$"
)
_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{0,40}$")
_STATES = {"validating_files": "pending", "queued": "pending"}  # OpenAI's -> FineTuningState
_CODES = {400: "invalidPayload", 401: "unauthorized", 403: "forbidden", 404: "notFound"}
_CODES |= {409: "conflict", 429: "tooManyRequests"}


def _template(path: str) -> str | None:
    """The document's path template a data-plane path matches (`/fine_tuning/jobs/{...}`)."""
    for template in load_subset()["data_plane"]["paths"]:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            return str(template)
    return None


class FakeAzure:
    """`with FakeAzure(key=..., token=...) as azure:`; `azure.endpoint` is the resource's
    `/openai` URL, `azure.management_url` Resource Manager's; `azure.inner` the OpenAI fake."""

    def __init__(
        self,
        key: str,
        token: str,
        job_duration: float = 0.3,
        deploy_seconds: float = 0.0,
        **options: Any,
    ) -> None:
        self.key, self.token = key, token
        self.inner = FakeOpenAI(job_duration=job_duration, **options)
        self.arm = Deployments(lambda m: self.inner.state.model_info(m) is not None, deploy_seconds)
        self.requests: list[dict[str, Any]] = []
        self.ignored: list[str] = []  # query parameters the document does not list
        self.refusals: list[str] = []
        self.errors: list[str] = []  # replies that broke the document
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def root(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def endpoint(self) -> str:
        return f"{self.root}/openai"

    @property
    def management_url(self) -> str:
        return self.root

    @property
    def deployments_made(self) -> list[DeploymentRecord]:
        return list(self.arm.made)

    def __enter__(self) -> FakeAzure:
        self.inner.start()
        self._http = httpx2.Client(base_url=self.inner.base_url, timeout=60)
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, ctype, body = front.answer(self.command, self.path, self.headers, raw)
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_GET

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
        self._http.close()
        self.inner.__exit__(kind, exc, tb)
        for schema, body in self.arm.replies:
            self._check(f"ARM {schema}", errors_for("resource_manager", schema, body))
        if kind is None and self.errors:
            raise AssertionError(
                "the Azure fake broke Azure's document:\n" + "\n".join(self.errors)
            )

    # -- routing ---------------------------------------------------------------------------------

    def answer(self, method: str, target: str, headers: Any, raw: bytes) -> Reply:
        url = urlsplit(target)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        self._capture(method, url.path, query, headers, raw)
        if "api-version" not in query:
            return self._refuse(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        arm = _ACCOUNT.match(url.path)
        if arm:
            if headers.get("authorization") != f"Bearer {self.token}":
                return self._refuse(401, "AuthenticationFailed", "Bearer token missing or invalid.")
            return self.arm.answer(method, arm.group("account"), arm.group("name"), raw)
        if not url.path.startswith("/openai/"):
            return self._refuse(404, "404", "Resource not found")
        if headers.get("api-key") != self.key:
            return self._refuse(
                401, "401", "Access denied due to invalid subscription key or wrong API endpoint."
            )
        if query["api-version"] != API_VERSION:
            return self._refuse(
                400, "BadRequest", f"API version not supported by this fake: {query['api-version']}"
            )
        deployed = _DEPLOYED.match(url.path)
        if deployed:
            return self._inference(deployed.group("name"), deployed.group("rest"), raw)
        path = "/" + url.path.removeprefix("/openai/")
        template = _template(path)
        operation = load_subset()["data_plane"]["paths"].get(template or "", {}).get(method.lower())
        if operation is None:
            if path.startswith(("/chat/", "/completions")):
                return self._refuse(404, "DeploymentNotFound", "Inference needs a deployment.")
            return self._refuse(404, "notFound", f"{method} {path} is not in the document")
        return self._operation(method, path, operation, query, headers, raw)

    def _operation(
        self,
        method: str,
        path: str,
        operation: dict[str, Any],
        query: dict[str, str],
        headers: Any,
        raw: bytes,
    ) -> Reply:
        allowed = operation.get("query", [])
        self.ignored += [k for k in query if k != "api-version" and k not in allowed]
        rest = {k: v for k, v in query.items() if k in allowed}
        body, ctype = raw, headers.get("content-type", JSON)
        if "body" in operation:
            refused = self._check_body(operation["body"], raw)
            if refused is not None:
                return refused
            body = json.dumps(self._to_openai(json.loads(raw))).encode()
        if "formData" in operation:
            refused = self._check_form(operation["formData"], raw, ctype)
            if refused is not None:
                return refused
        reply = self._http.request(
            method,
            path + ("?" + urlencode(rest) if rest else ""),
            content=body,
            headers={"authorization": f"Bearer {self.key}", "content-type": ctype},
        )
        if reply.status_code >= 400:
            return self._inner_error(reply)
        status, schema = next(iter(operation["responses"].items()))
        if schema == "file":
            return int(status), reply.headers.get("content-type", JSON), reply.content
        return self._azure_reply(int(status), schema, reply.json())

    def _check_body(self, schema: str, raw: bytes) -> Reply | None:
        try:
            request = json.loads(raw)
        except ValueError:
            return self._refuse(400, "invalidPayload", "The request body is not valid JSON.")
        problems = errors_for("data_plane", schema, request, strict=True)
        suffix = request.get("suffix") if isinstance(request, dict) else None
        if not problems and isinstance(suffix, str) and not _SUFFIX.match(suffix):
            problems = [f"$.suffix: {suffix!r} is not up to 40 characters of a-z A-Z 0-9 - _"]
        if problems:
            return self._refuse(400, "invalidPayload", f"{schema}: {problems[0]}")
        return None

    def _check_form(self, fields: dict[str, Any], raw: bytes, ctype: str) -> Reply | None:
        form = parse_multipart(raw, ctype)
        for name, rule in fields.items():
            if rule.get("required") and name not in form:
                return self._refuse(400, "invalidPayload", f"form field {name} is required")
            value = form.get(name, (None, b""))[1].decode("utf-8", "replace")
            if name in form and "enum" in rule and value not in rule["enum"]:
                return self._refuse(
                    400, "invalidPayload", f"{name}: {value!r} not in {rule['enum']}"
                )
        unknown = sorted(set(form) - set(fields))
        if unknown:
            return self._refuse(400, "invalidPayload", f"undocumented form fields {unknown}")
        return None

    @staticmethod
    def _to_openai(request: dict[str, Any]) -> dict[str, Any]:
        """Azure's create body as OpenAI's: the hyperparameters move under `method`."""
        hyper = request.pop("hyperparameters", None) or {}
        kind = (request.pop("method", None) or {}).get("type", "supervised")
        request["method"] = {"type": kind, kind: {"hyperparameters": hyper}}
        return request

    def _azure_reply(self, status: int, schema: str, body: Any) -> Reply:
        """OpenAI's reply as Azure's: cut to the document, states mapped, suffix restored."""
        for job in body.get("data", [body]) if schema.startswith("FineTuningJob") else []:
            if isinstance(job, dict) and "status" in job:
                job["status"] = _STATES.get(job["status"], job["status"])
                job["suffix"] = self._suffix(str(job.get("id", "")))
        shaped = project("data_plane", schema, body)
        self._check(schema, errors_for("data_plane", schema, shaped))
        return status, JSON, json.dumps(shaped).encode()

    def _suffix(self, job_id: str) -> str | None:
        """The suffix a job was created with (kept by the OpenAI fake with its request; Azure
        returns it on the job, OpenAI does not)."""
        with self.inner.state.lock:
            found = self.inner.state._jobs.get(job_id)
        return None if found is None else found.request.get("suffix")

    def _inference(self, name: str, rest: str, raw: bytes) -> Reply:
        with self.arm.lock:
            state = self.arm.state(name)
            model = self.arm.model_of(name) if state == "Succeeded" else None
        if model is None:
            return self._refuse(
                404, "DeploymentNotFound", "The API deployment for this resource does not exist."
            )
        request = json.loads(raw)
        request["model"] = model
        reply = self._http.post(
            "/" + rest,
            content=json.dumps(request).encode(),
            headers={"authorization": f"Bearer {self.key}", "content-type": JSON},
        )
        return reply.status_code, reply.headers.get("content-type", JSON), reply.content

    def _inner_error(self, reply: httpx2.Response) -> Reply:
        """An error of the OpenAI fake in Azure's shape (`ErrorResponse`)."""
        try:
            message = str(reply.json()["error"]["message"]) or "error"
        except (ValueError, KeyError, TypeError):
            message = reply.text[:300] or "error"
        code = _CODES.get(reply.status_code, "internalFailure")
        body = {"error": {"code": code, "message": message}}
        self._check("ErrorResponse", errors_for("data_plane", "ErrorResponse", body))
        return reply.status_code, JSON, json.dumps(body).encode()

    def _capture(
        self, method: str, path: str, query: dict[str, str], headers: Any, raw: bytes
    ) -> None:
        entry: dict[str, Any] = {"method": method, "path": path, "query": query}
        ctype = headers.get("content-type") or ""
        if raw and ctype.startswith("multipart/form-data"):
            fields = parse_multipart(raw, ctype)
            entry["form"] = {  # a field's text, a file's name and size
                k: v[1].decode("utf-8", "replace") if v[0] is None else (v[0], len(v[1]))
                for k, v in fields.items()
            }
        elif raw:
            try:
                entry["json"] = json.loads(raw)
            except ValueError:
                entry["raw"] = raw
        with self.lock:
            self.requests.append(entry)

    def _check(self, schema: str, problems: list[str]) -> None:
        if problems:
            with self.lock:
                self.errors.append(f"{schema}: {problems[0]}")

    def _refuse(self, status: int, code: str, message: str) -> Reply:
        with self.lock:
            self.refusals.append(f"{status} {code}: {message}")
        return error(status, code, message)

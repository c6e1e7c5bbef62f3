"""A fake Azure OpenAI resource: Azure's URL, auth and deployment rules in front of the OpenAI fake.

Azure OpenAI speaks OpenAI's fine-tuning API with documented differences, which this front
enforces before forwarding to `tests.openai_fake.FakeOpenAI` (whose replies are checked against
OpenAI's OpenAPI document):

- paths under `/openai/` (`https://{resource}.openai.azure.com/openai/files`, ...);
- an `api-version` query parameter on every request (400 without, as Azure answers);
- the key in an `api-key` header (401 without or with a wrong one), not `Authorization`;
- inference only through a deployment: `/openai/deployments/{name}/chat/completions`, 404
  `DeploymentNotFound` unless the deployment exists and has succeeded;
- deployments made through Azure Resource Manager (`PUT/GET/DELETE /subscriptions/.../
  Microsoft.CognitiveServices/accounts/{resource}/deployments/{name}?api-version=`), with a
  bearer token; `deployments_made` records each (name, model, sku, created, deleted).

Nothing it returns is a result.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2

from tests.openai_fake import FakeOpenAI

__all__ = ["FakeAzure"]

_ARM = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.CognitiveServices/accounts/[^/]+/deployments/(?P<name>[^/]+)$"
)
_DEPLOYED = re.compile(
    r"^/openai/deployments/(?P<name>[^/]+)/(?P<rest>chat/completions|completions)$"
)


class FakeAzure:
    """`with FakeAzure(key=..., token=...) as azure:`; `azure.endpoint` is the resource's
    `/openai` URL, `azure.management_url` the Resource Manager's; `azure.inner` the OpenAI fake."""

    def __init__(self, key: str, token: str, job_duration: float = 0.3, **options: Any) -> None:
        self.key, self.token = key, token
        self.inner = FakeOpenAI(job_duration=job_duration, **options)
        self.deployments: dict[str, dict[str, Any]] = {}
        self.deployments_made: list[dict[str, Any]] = []
        self.refusals: list[str] = []
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

    # -- routing ---------------------------------------------------------------------------------

    def answer(self, method: str, target: str, headers: Any, raw: bytes) -> tuple[int, str, bytes]:
        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        if "api-version" not in query:
            return self._error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        arm = _ARM.match(url.path)
        if arm:
            if headers.get("authorization") != f"Bearer {self.token}":
                return self._error(401, "AuthenticationFailed", "Bearer token missing or invalid.")
            return self._deployment(method, arm.group("name"), raw)
        if not url.path.startswith("/openai/"):
            return self._error(404, "404", "Resource not found")
        if headers.get("api-key") != self.key:
            return self._error(
                401, "401", "Access denied due to invalid subscription key or wrong API endpoint."
            )
        path, body = "/" + url.path.removeprefix("/openai/"), raw
        deployed = _DEPLOYED.match(url.path)
        if deployed:
            with self.lock:
                found = self.deployments.get(deployed.group("name"))
            if found is None or found["properties"]["provisioningState"] != "Succeeded":
                return self._error(
                    404,
                    "DeploymentNotFound",
                    "The API deployment for this resource does not exist.",
                )
            request = json.loads(raw)
            request["model"] = found["properties"]["model"]["name"]
            path, body = "/" + deployed.group("rest"), json.dumps(request).encode()
        elif path.startswith(("/chat/", "/completions")):
            return self._error(404, "DeploymentNotFound", "Inference needs a deployment.")
        rest = {k: v for k, v in parse_qsl(url.query, keep_blank_values=True) if k != "api-version"}
        reply = self._http.request(
            method,
            path + ("?" + urlencode(rest) if rest else ""),
            content=body,
            headers={
                "authorization": f"Bearer {self.key}",
                "content-type": headers.get("content-type", "application/json"),
            },
        )
        return (
            reply.status_code,
            reply.headers.get("content-type", "application/json"),
            reply.content,
        )

    def _deployment(self, method: str, name: str, raw: bytes) -> tuple[int, str, bytes]:
        with self.lock:
            if method == "PUT":
                request = json.loads(raw)
                model = request["properties"]["model"]["name"]
                if self.inner.state.model_info(model) is None:
                    return self._error(
                        400, "DeploymentModelNotSupported", f"model {model} not found"
                    )
                self.deployments[name] = {
                    "id": name,
                    "name": name,
                    "sku": request["sku"],
                    "properties": {
                        "model": request["properties"]["model"],
                        "provisioningState": "Succeeded",
                    },
                }
                self.deployments_made.append(
                    {
                        "name": name,
                        "model": model,
                        "sku": request["sku"]["name"],
                        "created": time.time(),
                        "deleted": None,
                    }
                )
                return 201, "application/json", json.dumps(self.deployments[name]).encode()
            found = self.deployments.get(name)
            if found is None:
                return self._error(404, "NotFound", f"deployment {name} not found")
            if method == "DELETE":
                del self.deployments[name]
                for made in self.deployments_made:
                    if made["name"] == name and made["deleted"] is None:
                        made["deleted"] = time.time()
                return 200, "application/json", b""
            return 200, "application/json", json.dumps(found).encode()

    def _error(self, status: int, code: str, message: str) -> tuple[int, str, bytes]:
        self.refusals.append(f"{status} {code}")
        return (
            status,
            "application/json",
            json.dumps({"error": {"code": code, "message": message}}).encode(),
        )

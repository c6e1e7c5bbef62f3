"""Azure Resource Manager's deployments of a fake Azure OpenAI resource (api-version 2024-10-01).

`PUT .../deployments/{name}` answers 201 with `provisioningState` `Creating` (200 for an update);
`GET` reads `Succeeded` once `deploy_seconds` have passed; `GET .../deployments` lists them
(`DeploymentListResult`); `DELETE` answers 200, or 204 when there is no such deployment, as the
document says. Request bodies are checked strictly against `Deployment`, replies as published.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.azure_fake.spec import errors_for

Reply = tuple[int, str, bytes]
JSON = "application/json"
RESOURCE_TYPE = "Microsoft.CognitiveServices/accounts/deployments"


@dataclass
class DeploymentRecord:
    """One deployment the fake made: what it hosted, when, and when it was deleted."""

    name: str
    model: str
    sku: str
    tags: dict[str, str]
    created: float
    deleted: float | None = None


@dataclass
class Deployments:
    """The deployments of one account; `exists(model)` says whether a model can be deployed."""

    exists: Callable[[str], bool]
    deploy_seconds: float = 0.0
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    made: list[DeploymentRecord] = field(default_factory=list)
    replies: list[tuple[str, Any]] = field(default_factory=list)  # (schema, body) sent
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, account_path: str, name: str | None, raw: bytes) -> Reply:
        with self.lock:
            if name is None:
                if method != "GET":
                    return error(405, "MethodNotAllowed", f"{method} on the deployment list")
                value = [self._view(account_path, n) for n in sorted(self.live)]
                return self._reply(200, "DeploymentListResult", {"value": value})
            if method == "PUT":
                return self._put(account_path, name, raw)
            if method == "DELETE":
                return self._delete(name)
            if method == "GET":
                if name not in self.live:
                    return error(404, "DeploymentNotFound", f"Deployment {name} not found.")
                return self._reply(200, "Deployment", self._view(account_path, name))
            return error(405, "MethodNotAllowed", f"{method} on a deployment")

    def _put(self, account_path: str, name: str, raw: bytes) -> Reply:
        try:
            request = json.loads(raw)
        except ValueError:
            return error(400, "InvalidRequestContent", "The request content is not valid JSON.")
        problems = errors_for("resource_manager", "Deployment", request, strict=True)
        model = (request.get("properties") or {}).get("model") or {}
        if not problems and not model.get("name"):
            problems = ["$.properties.model.name: required to deploy a model"]
        if problems:
            return error(400, "InvalidRequestContent", f"Deployment body: {problems[0]}")
        if not self.exists(model["name"]):
            return error(400, "DeploymentModelNotSupported", f"model {model['name']} not found")
        updated = name in self.live
        self.live[name] = {
            "sku": request.get("sku"),
            "tags": request.get("tags") or {},
            "model": model,
            "ready_at": time.monotonic() + self.deploy_seconds,
        }
        self.made.append(
            DeploymentRecord(
                name,
                model["name"],
                request["sku"]["name"],
                dict(self.live[name]["tags"]),
                time.time(),
            )
        )
        return self._reply(200 if updated else 201, "Deployment", self._view(account_path, name))

    def _delete(self, name: str) -> Reply:
        if self.live.pop(name, None) is None:
            return 204, JSON, b""
        for made in self.made:
            if made.name == name and made.deleted is None:
                made.deleted = time.time()
        return 200, JSON, b""

    def state(self, name: str) -> str | None:
        """`Succeeded` once deployed, `Creating` before, None when there is no such deployment."""
        found = self.live.get(name)
        if found is None:
            return None
        return "Succeeded" if time.monotonic() >= found["ready_at"] else "Creating"

    def model_of(self, name: str) -> str:
        return str(self.live[name]["model"]["name"])

    def _view(self, account_path: str, name: str) -> dict[str, Any]:
        found = self.live[name]
        body: dict[str, Any] = {
            "id": f"{account_path}/deployments/{name}",
            "name": name,
            "type": RESOURCE_TYPE,
            "sku": found["sku"],
            "properties": {"model": found["model"], "provisioningState": self.state(name)},
        }
        if found["tags"]:
            body["tags"] = found["tags"]
        return body

    def _reply(self, status: int, schema: str, body: Any) -> Reply:
        self.replies.append((schema, body))
        return status, JSON, json.dumps(body).encode()


def error(status: int, code: str, message: str) -> Reply:
    """An error in the shape both documents share: `{"error": {"code", "message"}}`."""
    return status, JSON, json.dumps({"error": {"code": code, "message": message}}).encode()

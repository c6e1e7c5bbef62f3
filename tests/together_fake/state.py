"""The fake Together account: files, jobs and dedicated endpoints (on the wall clock), models,
prices (quotes and bills at `price_per_token`, a credit limit), and the fault plan."""

from __future__ import annotations

import fnmatch
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Oracle = Callable[[str, str], Mapping[str, float]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": {"message": message, "type": kind}}


@dataclass
class Fault:
    method: str
    pattern: str
    status: int
    after: bool
    rate: float
    count: int


@dataclass
class Job:
    request: dict[str, Any]
    id: str
    created: float
    examples: int
    tokens: int
    labels: tuple[str, ...]
    duration: float
    cancelled: bool = False
    output: str = ""
    checkpoints: list[int] = field(default_factory=list)


@dataclass
class Endpoint:
    """A dedicated endpoint: PENDING, STARTING, then STARTED (or ERROR) after `start` seconds."""

    request: dict[str, Any]
    id: str
    name: str
    created: float  # monotonic
    created_wall: float
    start: float
    fails: bool = False
    deleted: float | None = None


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


class TogetherState:
    """Files, jobs and models; every method takes the lock."""

    def __init__(self, job_duration: float = 0.5, api_key: str | None = None) -> None:
        self.job_duration = job_duration
        self.api_key = api_key
        self.lock = threading.RLock()
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.jobs: dict[str, Job] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.errors: list[str] = []
        self.faults: list[Fault] = []
        self.base_models = {"meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"}
        self.oracle: Oracle | None = None
        self._rng = random.Random(0)
        # Prices: dollars per token processed, quoted and billed alike (0: the fake bills
        # nothing); a credit limit over which a quote is not allowed to proceed.
        self.price_per_token = 0.0
        self.user_limit: float | None = None
        self.quotes: list[dict[str, Any]] = []  # every estimate-price request, as sent
        # Dedicated endpoints: start time, hardware offered, how many of the next fail.
        self.endpoints: dict[str, Endpoint] = {}
        self.endpoint_start = 0.3
        self.hardware = {"1x_nvidia_h100_80gb_sxm", "2x_nvidia_h100_80gb_sxm"}
        self.failing_endpoints = 0
        # False: a fine-tuned model answers only on a dedicated endpoint (no serverless LoRA).
        self.serverless_lora = True

    def fail_next(
        self,
        method: str,
        pattern: str,
        status: int,
        after: bool = False,
        rate: float = 1.0,
        count: int = 1,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(method, pattern, status, after, rate, count))

    def take_fault(self, method: str, path: str, after: bool) -> int | None:
        with self.lock:
            for fault in self.faults:
                hit = fault.method == method and fnmatch.fnmatchcase(path, fault.pattern)
                live = hit and fault.after == after and fault.count > 0
                if live and self._rng.random() < fault.rate:
                    fault.count -= 1
                    return fault.status
        return None

    def count(self, method: str, pattern: str, status: int | None = None) -> int:
        with self.lock:
            return sum(
                m == method and fnmatch.fnmatchcase(p, pattern) and status in (None, s)
                for m, p, s in self.requests
            )

    def status(self, job: Job) -> str:
        if job.cancelled:
            return "cancelled"
        share = (time.monotonic() - job.created) / job.duration
        for limit, name in (
            (0.1, "pending"),
            (0.2, "queued"),
            (0.9, "running"),
            (1.0, "uploading"),
        ):
            if share < limit:
                return name
        if job.examples < 10:
            return "error"
        return "completed"

    def job_object(self, job: Job, truncated: bool = False) -> dict[str, Any]:
        status, request = self.status(job), job.request
        done = status == "completed"
        body: dict[str, Any] = {
            "id": job.id,
            "status": status,
            "created_at": _iso(job.created),
            "updated_at": _iso(time.time()),
            "model": request["model"],
            "training_file": request["training_file"],
            "n_epochs": request.get("n_epochs", 1),
            "n_checkpoints": request.get("n_checkpoints", 1),
            "n_evals": request.get("n_evals", 0),
            "batch_size": request.get("batch_size", 8),
            "learning_rate": request.get("learning_rate", 1e-5),
            "suffix": request.get("suffix", ""),
            "model_output_name": job.output,
            "events": [],
        }
        if done:
            body["token_count"] = job.tokens
            # Nanodollars, as Together's SDK reads it (finetune_price_to_dollars); 0 unless set.
            body["total_price"] = round(self.job_price(job.tokens, request) * 1e9)
        if status == "error":
            body["events"] = [self._event(job, "job_error", "too few examples (fewer than 10)")]
        if not truncated and request.get("training_type"):
            body["training_type"] = request["training_type"]
        return body

    def _event(self, job: Job, kind: str, message: str, step: int = 0) -> dict[str, Any]:
        return {
            "object": "fine-tune-event",
            "created_at": _iso(time.time()),
            "message": message,
            "type": kind,
            "param_count": 8_000_000_000,
            "token_count": job.tokens,
            "total_steps": job.checkpoints[-1] if job.checkpoints else 0,
            "wandb_url": "",
            "step": step,
            "checkpoint_path": "",
            "model_path": "",
            "training_offset": 0,
            "hash": uuid.uuid4().hex[:8],
        }

    def job_price(self, tokens: int, request: dict[str, Any]) -> float:
        """Dollars for a job over a file of `tokens` (eval tokens: the harness asks none)."""
        return tokens * int(request.get("n_epochs", 1)) * self.price_per_token

    def endpoint_state(self, endpoint: Endpoint) -> str:
        share = (time.monotonic() - endpoint.created) / endpoint.start if endpoint.start else 1.0
        if share < 0.3:
            return "PENDING"
        if share < 1.0:
            return "STARTING"
        return "ERROR" if endpoint.fails else "STARTED"

    def live_endpoints(self) -> list[Endpoint]:
        with self.lock:
            return [e for e in self.endpoints.values() if e.deleted is None]

    def billed_minutes(self) -> int:
        """Started minutes of every endpoint, created to deleted (or now)."""
        with self.lock:
            ends = [(e.deleted or time.monotonic()) - e.created for e in self.endpoints.values()]
        return sum(max(1, math.ceil(seconds / 60)) for seconds in ends)

    def endpoint_object(self, endpoint: Endpoint, listed: bool = False) -> dict[str, Any]:
        request = endpoint.request
        body: dict[str, Any] = {
            "object": "endpoint",
            "id": endpoint.id,
            "name": endpoint.name,
            "model": request["model"],
            "type": "dedicated",
            "owner": "harness-test",
            "state": self.endpoint_state(endpoint),
            "created_at": _iso(endpoint.created_wall),
        }
        if not listed:
            body |= {
                "display_name": request.get("display_name", endpoint.name),
                "hardware": request["hardware"],
                "autoscaling": request["autoscaling"],
            }
        return body

    def model_labels(self, model: str) -> tuple[str, ...] | None:
        """The labels a callable model answers with (None: no such model, or not callable
        serverless, or an endpoint not STARTED)."""
        if model in self.base_models:
            return ("unknown",)
        with self.lock:
            for endpoint in self.endpoints.values():
                if endpoint.name == model and endpoint.deleted is None:
                    if self.endpoint_state(endpoint) != "STARTED":
                        return None
                    return self.trained_labels(str(endpoint.request["model"]))
        return self.trained_labels(model) if self.serverless_lora else None

    def trained_labels(self, model: str) -> tuple[str, ...] | None:
        """The labels of a completed job's model or checkpoint (None: no such model)."""
        name, _, step = model.rpartition(":")
        with self.lock:
            for job in self.jobs.values():
                if self.status(job) != "completed":
                    continue
                if model == job.output or (name == job.output and step.isdigit()):
                    return job.labels
        return None

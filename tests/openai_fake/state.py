"""The fake OpenAI account: files, jobs, models, the simulated clock, and the fault plan.

Every public method takes the state's lock, so a test may inspect and steer the fake from its own
thread while the server answers requests on others.
"""

from __future__ import annotations

import base64
import random
import re
import string
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import TRAINING_NOT_AVAILABLE, ApiError, injected_error
from .objects import (
    COMPLETION_ONLY_MODELS,
    FakeConfig,
    ModelInfo,
    Oracle,
    RecordedRequest,
    Rule,
    StoredFile,
)
from .training import (
    JobPlan,
    SimJob,
    TrainingData,
    parse_training_jsonl,
    plan_job,
    requested_hyperparameters,
    resolve_hyperparameters,
)

__all__ = ["FakeState"]

_ALPHABET = string.ascii_letters + string.digits


class FakeState:
    """Everything the fake server knows; safe to use from any thread.

    Attributes a test may change at any time: ``job_duration`` (new jobs), ``latency`` (seconds
    each reply waits), ``refuse_training`` (every job creation gets 403
    ``training_not_available``), ``result_files_base64``, ``validate``. Read ``requests`` (every
    :class:`RecordedRequest`) and ``errors`` (problems of the fake itself).
    """

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.job_duration = config.job_duration
        self.latency = config.latency
        self.validate = config.validate
        self.result_files_base64 = config.result_files_base64
        self.refuse_training = False
        self.dropped_fields: list[str] = []  # create-body fields a dialect did not keep
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self.lock = threading.RLock()
        self._rng = random.Random(config.seed)
        self._started, self._offset, self._epoch0 = time.monotonic(), 0.0, time.time()
        self._files: dict[str, StoredFile] = {}
        self._jobs: dict[str, SimJob] = {}
        self._faults: list[tuple[Rule, ApiError]] = []
        self._lost_replies: list[tuple[Rule, ApiError]] = []
        self._tampers: list[tuple[Rule, Callable[[Any], Any]]] = []
        self._job_failures: list[dict[str, Any]] = []
        self._oracle: Oracle | None = None

    # -- clock and ids -------------------------------------------------------------------------

    def now(self) -> float:
        """Simulated seconds since the server was made (wall time + ``advance``, or manual)."""
        with self.lock:
            real = time.monotonic() - self._started if self.config.clock == "real" else 0.0
            return real + self._offset

    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward (in both clock modes)."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward, got {seconds=}")
        with self.lock:
            self._offset += seconds

    def unix(self, at: float | None = None) -> int:
        """Unix timestamp (seconds) of simulated time ``at`` (default: now)."""
        return int(self._epoch0 + (self.now() if at is None else at))

    def new_id(self, prefix: str) -> str:
        """A fresh OpenAI-style id such as ``file-…``, ``ftjob-…``, ``ftckpt_…``."""
        with self.lock:
            tail = "".join(self._rng.choice(_ALPHABET) for _ in range(24))
            return f"{prefix}_{tail}" if prefix == "ftckpt" else f"{prefix}-{tail}"

    # -- steering (for tests) ------------------------------------------------------------------

    def set_oracle(self, oracle: Oracle | None) -> None:
        """Decide how models answer: ``oracle(model_id, prompt_text) -> {label: probability}``.

        ``prompt_text`` is the last user message (chat) or the prompt (legacy completions). The
        reply is the most probable label (ties: first in the mapping); logprobs are the logs of
        the given probabilities. ``None`` restores the default: uniform over the labels of the
        model's training file, ``{"unknown": 1.0}`` for base models. Inside an oracle,
        :meth:`model_info` tells a model's job, hyperparameters and epoch.
        """
        with self.lock:
            self._oracle = oracle

    def fail_next(
        self,
        path_pattern: str | re.Pattern[str],
        status: int,
        *,
        code: str | None = None,
        count: int = 1,
        method: str | None = None,
        after: bool = False,
        rate: float = 1.0,
        **error: Any,
    ) -> None:
        """Answer the next ``count`` matching requests with an error instead of handling them.

        With ``after=True`` the request IS handled (a job is created, a file stored) and only its
        reply is lost: the client sees the error, as when a real server or proxy fails after
        committing. With ``rate`` < 1 each matching request fails with that probability (seeded
        by the server's seed) until ``count`` have failed.

        Args:
            path_pattern: A glob on the path, with or without ``/v1`` (``"/fine_tuning/jobs"``,
                ``"/files/*"``), or a compiled regex.
            status: HTTP status, e.g. 400, 403, 429, 500, 503.
            code: ``error.code`` (429 defaults to ``rate_limit_exceeded``).
            count: How many requests fail before the path works again.
            method: Only fail this HTTP method.
            **error: ``message``, ``type``, ``param``, ``retry_after`` (seconds; 429 defaults to
                0.05) for :func:`~tests.openai_fake.errors.injected_error`.
        """
        fault = injected_error(status, code=code, **error)
        rule = Rule(path_pattern, method, count, rate, self._rng)
        with self.lock:
            (self._lost_replies if after else self._faults).append((rule, fault))

    def fail_next_job(
        self,
        code: str = "server_error",
        message: str = "The job failed due to an internal error.",
        *,
        param: str | None = None,
        at: float = 0.5,
    ) -> None:
        """Make the next created job fail at fraction ``at`` of its duration (< 0.1: validating)."""
        with self.lock:
            self._job_failures.append({"code": code, "message": message, "param": param, "at": at})

    def fail_job(
        self, job_id: str, code: str = "server_error", message: str = "Job failed."
    ) -> None:
        """Fail an unfinished job now."""
        with self.lock:
            job = self._job(job_id)
            if job.finished(self.now()):
                raise ValueError(f"job {job_id} has already finished ({job.status(self.now())})")
            error = {"code": code, "message": message, "param": None}
            job.fail(self.now(), self.new_id("ftevent"), error)

    def tamper_next(self, path_pattern: str, mutate: Callable[[Any], Any], count: int = 1) -> None:
        """Let ``mutate(body) -> body`` change the next matching JSON reply before validation.

        Exists to prove the in-server schema check fires: a drifting fake must fail loudly.
        """
        with self.lock:
            self._tampers.append((Rule(path_pattern, None, count), mutate))

    # -- inspection (for tests) ----------------------------------------------------------------

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every job's current ``FineTuningJob`` object, by id, oldest first."""
        with self.lock:
            return {job_id: self.job_object(job_id) for job_id in self._jobs}

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Every file's ``OpenAIFile`` object (uploads and result files), by id, oldest first."""
        with self.lock:
            self._refresh()
            return {file_id: stored.to_api() for file_id, stored in self._files.items()}

    def file_bytes(self, file_id: str) -> bytes:
        """The stored (plain) content of a file."""
        with self.lock:
            return self._file(file_id).content

    def count(
        self, method: str | None = None, path: str = "*", *, status: int | None = None
    ) -> int:
        """How many recorded requests match (``path``: glob, with or without ``/v1``)."""
        rule = Rule(path, method)
        with self.lock:
            return sum(
                rule.matches(r.method, r.path) and status in (None, r.status) for r in self.requests
            )

    def model_info(self, model_id: str) -> ModelInfo | None:
        """What a callable model is (base, fine-tuned, checkpoint); ``None`` if unknown."""
        with self.lock:
            aliases = self.config.base_models
            if model_id in aliases or model_id in aliases.values():
                snapshot = aliases.get(model_id, model_id)
                return ModelInfo(model_id, snapshot, chat=snapshot not in COMPLETION_ONLY_MODELS)
            for job in self._jobs.values():
                info = self._job_model_info(job, model_id)
                if info is not None:
                    return info
            return None

    def oracle(self) -> Oracle:
        """The oracle in force (the default one unless a test set another)."""
        with self.lock:
            return self._oracle or self._default_oracle

    def record_error(self, message: str) -> None:
        """Note a problem of the fake itself (re-raised by :meth:`raise_errors`)."""
        with self.lock:
            self.errors.append(message)

    def raise_errors(self) -> None:
        """Raise ``AssertionError`` if a reply broke the spec or a handler crashed."""
        with self.lock:
            if self.errors:
                raise AssertionError("fake OpenAI server errors:\n" + "\n\n".join(self.errors))

    # -- used by the HTTP handlers -------------------------------------------------------------

    def take_fault(self, method: str, path: str) -> ApiError | None:
        """Use up and return the first planned fault matching this request, if any."""
        with self.lock:
            return next((error for rule, error in self._faults if rule.take(method, path)), None)

    def take_lost_reply(self, method: str, path: str) -> ApiError | None:
        """Use up and return the first planned lost reply matching this handled request."""
        with self.lock:
            rules = self._lost_replies
            return next((error for rule, error in rules if rule.take(method, path)), None)

    def take_tamper(self, method: str, path: str) -> Callable[[Any], Any] | None:
        """Use up and return the first planned reply tamper matching this request, if any."""
        with self.lock:
            return next((fn for rule, fn in self._tampers if rule.take(method, path)), None)

    def add_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        """Store an upload (fine-tune files are checked as OpenAI does) and return it."""
        training = None
        if purpose == "fine-tune":
            if not filename.endswith(".jsonl"):
                message = "Invalid file format for Fine-Tuning API. Must be .jsonl"
                raise ApiError(400, message, param="file")
            try:
                training = parse_training_jsonl(content)
            except ValueError as exc:
                raise ApiError(400, str(exc), param="file", code="invalid_file_format") from None
        with self.lock:
            stored = StoredFile(
                self.new_id("file"), filename, purpose, content, self.unix(), training
            )
            self._files[stored.id] = stored
            return stored.to_api()

    def file_object(self, file_id: str) -> dict[str, Any]:
        """A file's ``OpenAIFile`` object (404 if unknown)."""
        with self.lock:
            self._refresh()
            return self._file(file_id).to_api()

    def file_content(self, file_id: str) -> bytes:
        """A file's bytes as served (result CSVs base64-encoded when that option is on)."""
        with self.lock:
            self._refresh()
            stored = self._file(file_id)
            if stored.purpose == "fine-tune-results" and self.result_files_base64:
                return base64.b64encode(stored.content)
            return stored.content

    def list_files(self, purpose: str | None, order: str) -> list[dict[str, Any]]:
        """All files (of ``purpose``), newest first unless ``order == "asc"``."""
        with self.lock:
            self._refresh()
            found = [f.to_api() for f in self._files.values() if purpose in (None, f.purpose)]
            return found if order == "asc" else found[::-1]

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a file; returns the ``DeleteFileResponse`` body."""
        with self.lock:
            del self._files[self._file(file_id).id]
            return {"id": file_id, "object": "file", "deleted": True}

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a job from a checked ``CreateFineTuningJobRequest`` body."""
        if self.refuse_training:
            raise ApiError(403, TRAINING_NOT_AVAILABLE, code="training_not_available")
        with self.lock:
            snapshot = self._fine_tunable(body["model"])
            training = self._training_file(body["training_file"], "training_file")
            if body.get("validation_file"):
                self._training_file(body["validation_file"], "validation_file")
            requested = requested_hyperparameters(body)
            job_id = self.new_id("ftjob")
            failure = self._validation_failure(snapshot, training, body["training_file"])
            if failure is None and self._job_failures:
                failure = self._job_failures.pop(0)
            org, suffix = self.config.organization, body.get("suffix") or ""
            name = f"ft:{snapshot}:{org}:{suffix}:{job_id[6:14]}"
            hyperparameters = resolve_hyperparameters(requested, training.n_examples)
            plan = JobPlan(job_id, self.now(), self.job_duration, hyperparameters, training, name)
            plan.has_validation, plan.failure = bool(body.get("validation_file")), failure
            seed = body.get("seed")
            seed = self._rng.randrange(2**31) if seed is None else seed
            request = {**body, "model": snapshot, "hyperparameters": requested, "seed": seed}
            self._jobs[job_id] = plan_job(plan, request, random.Random(seed), self.new_id)
            return self.job_object(job_id)

    def job_object(self, job_id: str) -> dict[str, Any]:
        """A job's current ``FineTuningJob`` object (404 if unknown)."""
        with self.lock:
            job = self._job(job_id)
            self._refresh()
            api = job.to_api(self.now(), self.unix, self.config.organization)
            if self.config.dialect == "nebius":  # Nebius's job object: a suffix, no metadata
                api |= {"suffix": job.request.get("suffix"), "metadata": None}
            return api

    def list_jobs(
        self, metadata: Mapping[str, str], *, null_metadata: bool
    ) -> list[dict[str, Any]]:
        """Jobs newest first whose metadata has every given pair (or none, if ``null_metadata``)."""
        if self.config.dialect == "nebius":  # Nebius's listing takes no metadata filter
            metadata, null_metadata = {}, False
        with self.lock:
            found = []
            for job_id, job in reversed(self._jobs.items()):
                tags = job.request.get("metadata") or {}
                if null_metadata and tags:
                    continue
                if all(tags.get(key) == value for key, value in metadata.items()):
                    found.append(self.job_object(job_id))
            return found

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel an unfinished job (400 otherwise) and return it."""
        with self.lock:
            job = self._job(job_id)
            if job.finished(self.now()):
                status = job.status(self.now())
                raise ApiError(400, f"Job {job_id} is already {status}; it cannot be cancelled.")
            job.cancel(self.now(), self.new_id("ftevent"))
            return self.job_object(job_id)

    def job_events(self, job_id: str) -> list[dict[str, Any]]:
        """A job's events so far, newest first."""
        with self.lock:
            return self._job(job_id).events_api(self.now(), self.unix)

    def job_checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """A job's checkpoints so far, newest first."""
        with self.lock:
            return self._job(job_id).checkpoints_api(self.now(), self.unix)

    # -- internals -----------------------------------------------------------------------------

    def _file(self, file_id: str) -> StoredFile:
        if file_id not in self._files:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return self._files[file_id]

    def _job(self, job_id: str) -> SimJob:
        if job_id not in self._jobs:
            message = f"Could not find fine-tuning job: {job_id}"
            raise ApiError(404, message, param="fine_tuning_job_id", code="fine_tune_not_found")
        return self._jobs[job_id]

    def _fine_tunable(self, model: str) -> str:
        snapshot = self.config.base_models.get(model, model)
        if snapshot not in self.config.base_models.values():
            message = f"Model {model} is not available for fine-tuning or does not exist."
            raise ApiError(400, message, param="model", code="model_not_available")
        return snapshot

    def _training_file(self, file_id: str, param: str) -> TrainingData:
        stored = self._files.get(file_id)
        if stored is None or stored.training is None:
            raise ApiError(400, f"invalid {param}: {file_id}", param=param)
        return stored.training

    def _validation_failure(
        self, snapshot: str, data: TrainingData, file_id: str
    ) -> dict[str, Any] | None:
        """The error a job meets while validating files (too few examples, wrong format)."""
        chat_model = snapshot not in COMPLETION_ONLY_MODELS
        minimum = self.config.min_examples
        if data.n_examples < minimum:
            problem = (
                f"Training file has {data.n_examples} example(s), "
                f"but must have at least {minimum} examples"
            )
        elif (data.format == "chat") != chat_model:
            wanted = "chat" if chat_model else "prompt/completion"
            problem = f"File {file_id} is not in the {wanted} format that {snapshot} requires"
        else:
            return None
        return {
            "code": "invalid_training_file",
            "message": problem,
            "param": "training_file",
            "at": 0.09,
        }

    def _refresh(self) -> None:
        """Create result files of jobs that have succeeded (the one side effect of time)."""
        now = self.now()
        for job in self._jobs.values():
            if job.result_file_id is None and job.status(now) == "succeeded":
                file_id, content = self.new_id("file"), job.result_csv.encode()
                created = self.unix(job.end_at)
                stored = StoredFile(
                    file_id, "step_metrics.csv", "fine-tune-results", content, created
                )
                self._files[file_id] = stored
                job.result_file_id = file_id

    def _job_model_info(self, job: SimJob, model_id: str) -> ModelInfo | None:
        now, plan, base = self.now(), job.plan, job.request["model"]
        common: dict[str, Any] = {
            "base_model": base,
            "job_id": plan.job_id,
            "hyperparameters": dict(plan.hyperparameters),
            "labels": plan.data.labels,
            "chat": base not in COMPLETION_ONLY_MODELS,
        }
        if model_id == plan.fine_tuned_model and job.status(now) == "succeeded":
            last_step = job.checkpoints[-1].step if job.checkpoints else None
            epochs = int(plan.hyperparameters["n_epochs"])
            return ModelInfo(model_id, epoch=epochs, step=last_step, **common)
        for ckpt in job.checkpoints:
            if ckpt.model == model_id and ckpt.at <= now:
                return ModelInfo(model_id, epoch=ckpt.epoch, step=ckpt.step, **common)
        return None

    def _default_oracle(self, model_id: str, prompt_text: str) -> Mapping[str, float]:
        info = self.model_info(model_id)
        if info is None or not info.labels:
            return {"unknown": 1.0}
        return {label: 1.0 / len(info.labels) for label in info.labels}

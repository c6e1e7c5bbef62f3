"""Fine-tuning jobs: create or reattach, poll with backoff, read events, results and checkpoints.

Paying twice for one trial is the failure this module exists to prevent. Before a job is created
a random key is written to the trial's journal and sent in the job's `metadata` (in its `suffix`
on an endpoint that keeps no metadata: Nebius); right after,
the job id is written too. A retried trial recalls the id (reattach), or, if the sweep died in
the instant between creating the job and recording its id, finds the job by its key. The create
call itself is never retried blindly: after any failure the key is looked up first, since a
server may have created the job and lost only the reply.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.backends.base import FAILED_JOB_BILLED, Journal
from harness.backends.hosted._epochs import FinishedJob, JobCheckpoint
from harness.backends.hosted._job_keys import (
    SUFFIX_KEY_LENGTH,
    Retry,
    create_once,
    job_key,
    keyed_suffix,
    study_tag,
)
from harness.backends.openai._providers import create_arguments
from harness.backends.openai.config import OpenAIBackendConfig
from harness.errors import BackendError

TERMINAL = ("succeeded", "failed", "cancelled")
BACKOFF = 1.5  # each poll waits this much longer than the last, up to poll_max_interval
MAX_JOBS_SEARCHED = 200  # when looking a job up by its key on an endpoint without filters
STEP_PREFIX = "step_"  # step metrics are logged apart from the per-epoch ones
MAX_CSV_STEPS_LOGGED = 200  # result-file rows logged as step metrics (one request each)
POLL_OUTAGE_SECONDS = 900  # how long polling may keep failing (after the SDK's own retries)


def _transient_errors() -> tuple[type[Exception], ...]:
    import openai

    return (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


def _answers() -> tuple[type[Exception], ...]:
    """Errors that are the server's answer (a 4xx: refused, invalid, unauthorised): no job was
    made. `create_once` catches `_transient_errors` (429, 5xx) before these."""
    import openai

    return (openai.APIStatusError,)


@dataclass(frozen=True)
class JobRequest:
    """What a trial asks the fine-tuning API for."""

    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]
    seed: int
    suffix: str
    metadata: dict[str, str]
    study: str = ""  # names the study in the suffix where the key travels there
    number: int = 0


def _journal_log(journal: Journal | None, metrics: Mapping[str, float], step: int) -> None:
    if journal is not None and metrics:
        journal.log_metrics({STEP_PREFIX + k: v for k, v in metrics.items()}, step)


def _thin(rows: list[dict[str, float]], limit: int) -> list[dict[str, float]]:
    """At most `limit` rows, evenly spaced, always keeping the last."""
    if len(rows) <= limit:
        return rows
    every = math.ceil(len(rows) / limit)
    return [row for i, row in enumerate(rows) if i % every == 0 or i == len(rows) - 1]


class JobRunner:
    """Creates, finds and waits for fine-tuning jobs through one SDK client."""

    def __init__(
        self,
        client: Callable[[], Any],
        config: OpenAIBackendConfig,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self.config = config
        self._sleep = sleep
        # Nebius's job API has no `metadata` (its create body and job object list `suffix`,
        # at most 64 characters, instead): there the key travels in the suffix, as on Together.
        self.key_in_suffix = config.provider == "nebius"
        # Azure's job API has no `metadata` either (its own document; `openai._azure`).
        self.key_in_suffix |= config.provider == "azure"
        self.created = 0  # jobs this runner created (for tests and logs)
        self._logged: dict[str, set[int]] = {}  # steps already logged, per job

    # -- create or reattach ---------------------------------------------------------------------

    def submit(self, request: JobRequest, journal: Journal) -> str:
        """The id of this trial's job: recalled, found by key, or created now (and recorded)."""
        key, known = job_key(journal, self._find_by_key, 16)
        if known:
            return known
        client = self._client().with_options(max_retries=0)
        if self.key_in_suffix:  # an endpoint that keeps no metadata: the suffix names the job
            suffix = keyed_suffix(self.config.suffix, request.study, request.number, key)
            labels: dict[str, Any] = {"suffix": suffix}
        else:
            labels = {
                "suffix": request.suffix,
                "metadata": {**request.metadata, "harness_job_key": key},
            }

        def create() -> str:
            arguments: dict[str, Any] = {
                "model": request.model,
                "training_file": request.training_file,
                "validation_file": request.validation_file,
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": request.hyperparameters},
                },
                "seed": request.seed,
                **labels,
            }
            # in the provider's own terms (Azure declares other shapes for the same fields)
            job = client.fine_tuning.jobs.create(**create_arguments(self.config, arguments))
            self.created += 1
            return str(job.id)

        retry = Retry(
            self.config.max_retries, self.config.poll_interval, self.config.poll_max_interval
        )
        find, transient = (lambda: self._find_by_key(key)), _transient_errors()
        return create_once(create, find, journal, transient, retry, self._sleep, _answers())

    def of_study(self, study_name: str) -> list[Any]:
        """Jobs whose metadata (or suffix) names this study (checked here too: an endpoint may
        ignore the filter and list every job)."""
        tag = f"{self.config.suffix}-{study_tag(study_name)}-t"
        return self._jobs_where(
            {"harness_study": study_name},
            lambda job: (job.metadata or {}).get("harness_study") == study_name,
            lambda suffix: suffix.startswith(tag),
            limit=100,
        )

    def _find_by_key(self, key: str) -> str | None:
        found = self._jobs_where(
            {"harness_job_key": key},
            lambda job: (job.metadata or {}).get("harness_job_key") == key,
            lambda suffix: suffix.endswith(f"-{key[:SUFFIX_KEY_LENGTH]}"),
            limit=50,
        )
        return str(found[0].id) if found else None

    def _jobs_where(
        self,
        metadata: dict[str, str],
        by_metadata: Callable[[Any], bool],
        by_suffix: Callable[[str], bool],
        limit: int,
    ) -> list[Any]:
        """Jobs that match, searched among the newest `MAX_JOBS_SEARCHED`: by metadata, or by
        the job's `suffix` field where the endpoint keeps no metadata."""
        if self.key_in_suffix:
            jobs = self._client().fine_tuning.jobs.list(limit=limit)
            matches = lambda job: by_suffix(str(getattr(job, "suffix", None) or ""))  # noqa: E731
        else:
            jobs = self._client().fine_tuning.jobs.list(metadata=metadata, limit=limit)
            matches = by_metadata
        found = []
        for index, job in enumerate(jobs):
            if matches(job):  # checked here: an endpoint that ignores the filter lists every job
                found.append(job)
            if index >= MAX_JOBS_SEARCHED:
                break
        return found

    # -- wait -----------------------------------------------------------------------------------

    def wait(
        self,
        job_id: str,
        journal: Journal | None,
        bill: Callable[[int], float] | None = None,
    ) -> Any:
        """Poll until the job ends, logging its metrics events as step metrics on the way. A
        failed job's bill, `bill(trained_tokens)` (none trained: 0), is journalled first
        (`FAILED_JOB_BILLED`); a cancelled one's is not known.

        Returns:
            The succeeded job (SDK `FineTuningJob`).

        Raises:
            BackendError: The job failed, was cancelled, or outlived `job_timeout`.
        """
        interval, started = self.config.poll_interval, time.monotonic()
        seen: set[str] = set()
        outage: float | None = None  # when polling started failing, if it is failing now
        transient = _transient_errors()
        while True:
            try:
                job = self._client().fine_tuning.jobs.retrieve(job_id)
                self._drain_events(job_id, seen, journal)
                outage = None
            except transient as exc:
                # The job runs on regardless: a flaky hour of polling must not fail a paid job.
                outage = outage if outage is not None else time.monotonic()
                if time.monotonic() - outage > POLL_OUTAGE_SECONDS:
                    raise BackendError(
                        f"fine-tuning job {job_id}: polling has failed for "
                        f"{POLL_OUTAGE_SECONDS // 60} minutes ({type(exc).__name__}); the job "
                        "keeps running on the server: `harness evaluate` its model later"
                    ) from None
                self._sleep(interval)
                interval = min(interval * BACKOFF, self.config.poll_max_interval)
                continue
            if job.status in TERMINAL:
                if job.status == "failed" and journal is not None and bill is not None:
                    billed = bill(int(job.trained_tokens or 0))
                    journal.record(FAILED_JOB_BILLED, f"{billed:.6f}")
                return _succeeded(job)
            waited = time.monotonic() - started
            if self.config.job_timeout is not None and waited > self.config.job_timeout:
                raise BackendError(
                    f"fine-tuning job {job_id} is still {job.status} after {waited:.0f} s "
                    f"(backend.job_timeout={self.config.job_timeout:g}); it keeps running on "
                    "the server: `harness evaluate` its model once it has succeeded"
                )
            self._sleep(interval)
            interval = min(interval * BACKOFF, self.config.poll_max_interval)

    def _drain_events(self, job_id: str, seen: set[str], journal: Journal | None) -> None:
        """Log metrics events not seen before (events come newest first, paged backwards)."""
        fresh = []
        for event in self._client().fine_tuning.jobs.list_events(job_id, limit=100):
            if event.id in seen:
                break
            fresh.append(event)
        logged = self._logged.setdefault(job_id, set())
        for event in reversed(fresh):
            seen.add(event.id)
            data = event.data if isinstance(event.data, dict) else {}
            if event.type == "metrics" and "step" in data:
                _journal_log(journal, _numbers(data, exclude=("step", "total_steps")), data["step"])
                logged.add(int(data["step"]))

    # -- results --------------------------------------------------------------------------------

    def finish(self, job: Any, journal: Journal | None) -> FinishedJob:
        """Read a succeeded job's result file and checkpoints (epochs numbered 1..n_epochs)."""
        n_epochs = int(job.hyperparameters.n_epochs)
        done = FinishedJob(str(job.id), str(job.fine_tuned_model), job.trained_tokens, n_epochs)
        if job.result_files:
            raw = self._client().files.content(job.result_files[0]).read()
            done.result_csv = decode_result_file(raw)
            done.rows = parse_result_csv(done.result_csv)
            self._log_rows(done, journal)
        items = list(self._client().fine_tuning.jobs.checkpoints.list(str(job.id), limit=100))
        total = int(max((row.get("step", 0) for row in done.rows), default=0))
        done.checkpoints = number_epochs(items, n_epochs, total)
        return done

    def _log_rows(self, done: FinishedJob, journal: Journal | None) -> None:
        """The result file as an artifact, and its steps the events did not cover as metrics."""
        if journal is None or done.result_csv is None:
            return
        journal.log_text(done.result_csv, "openai/result_file.csv")
        logged = self._logged.setdefault(done.id, set())
        missing = [row for row in done.rows if int(row["step"]) not in logged]
        for row in _thin(missing, MAX_CSV_STEPS_LOGGED):
            _journal_log(journal, {k: v for k, v in row.items() if k != "step"}, int(row["step"]))
            logged.add(int(row["step"]))


def _succeeded(job: Any) -> Any:
    if job.status == "succeeded":
        return job
    if job.status == "cancelled":
        raise BackendError(f"fine-tuning job {job.id} was cancelled; no model to evaluate")
    error = job.error
    reason = f"{error.code}: {error.message}" if error is not None else "no reason given"
    raise BackendError(f"fine-tuning job {job.id} failed ({reason})")


def _numbers(data: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in data.items()
        if key not in exclude and isinstance(value, int | float) and not isinstance(value, bool)
    }


def decode_result_file(raw: bytes) -> str:
    """The result CSV, whether served plain or base64-encoded (OpenAI does both).

    Raises:
        BackendError: The bytes are neither.
    """
    text = raw.decode("utf-8", errors="replace").strip()
    if text.startswith("step") or "," in text.partition("\n")[0]:
        return text + "\n"
    try:
        decoded = base64.b64decode(raw.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BackendError("the job's result file is neither CSV nor base64-encoded CSV") from None
    return decoded.strip() + "\n"


def parse_result_csv(text: str) -> list[dict[str, float]]:
    """Rows of the result CSV as numbers; empty cells (no validation at that step) are left out."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        values = {}
        for key, cell in row.items():
            try:
                values[key] = float(cell)
            except (TypeError, ValueError):
                continue
        if "step" in values:
            rows.append(values)
    return rows


def number_epochs(items: list[Any], n_epochs: int, total_steps: int) -> list[JobCheckpoint]:
    """Checkpoints oldest first, each with the epoch it ended.

    With the step count known, epoch = step / steps per epoch; otherwise the checkpoints are the
    last epochs in order (OpenAI keeps one per epoch for the last three).
    """
    ordered = sorted(items, key=lambda item: item.step_number)
    found = []
    for rank, item in enumerate(ordered):
        epoch = n_epochs - (len(ordered) - 1 - rank)
        if total_steps > 0:
            epoch = max(1, min(n_epochs, round(item.step_number * n_epochs / total_steps)))
        metrics = _numbers(item.metrics.model_dump(exclude_none=True))
        found.append(
            JobCheckpoint(epoch, item.step_number, item.fine_tuned_model_checkpoint, metrics)
        )
    return found

"""Together AI files and fine-tuning jobs: upload once, create or find again, wait, read results.

Together's `POST /v1/fine-tunes` takes no metadata and no idempotency key, so a trial's job is
named by its `suffix`: `<backend.suffix>-<study6>-tNNN-<key8>`, where `study6` is a digest of the
study name and `key8` the trial's job key, written to the journal before the job is created. The
output model name carries the suffix, so after a failed create (a 500 whose job was made all the
same, a dropped connection) the job is looked up in `GET /v1/fine-tunes` by its key before
another attempt, exactly as the OpenAI backend looks up its metadata key; the create call itself
is never retried blindly. The study digest finds a study's jobs for `remote_jobs`.

A new job is quoted first (`before_create`: `_quote`); a job recalled or found by its
key is not. What Together billed is read from the job's `total_price` (nanodollars, as its SDK's
`finetune_price_to_dollars` reads it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from harness.backends.base import Journal
from harness.backends.hosted._epochs import FinishedJob, JobCheckpoint
from harness.backends.hosted._job_keys import Retry, create_once, job_key, keyed_suffix, study_tag
from harness.backends.together._client import RefusedError, TogetherClient, TransientError
from harness.backends.together.config import TogetherBackendConfig
from harness.errors import BackendError

TERMINAL = ("completed", "error", "cancelled")
BACKOFF = 1.5
POLL_OUTAGE_SECONDS = 900
NANODOLLARS = 1_000_000_000


class TogetherFiles:
    """Uploads fine-tuning files once per content digest (the name embeds it, as for OpenAI)."""

    def __init__(self, client: TogetherClient) -> None:
        self.client = client
        self.uploads = 0

    def ensure(self, content: bytes, name: str) -> str:
        """The id of a file named `name` holding `content`: found in the listing or uploaded."""
        listing = self.client.request("GET", "/files", "listing files")
        for item in listing.get("data", []):
            if item.get("filename") == name and item.get("bytes") == len(content):
                return str(item["id"])
        uploaded = self.client.request(
            "POST",
            "/files/upload",
            f"uploading {name}",
            files={"file": (name, content, "application/jsonl")},
            data={"file_name": name, "purpose": "fine-tune", "file_type": "jsonl"},
        )
        self.uploads += 1
        return str(uploaded["id"])


class TogetherJobs:
    """Creates, finds and waits for Together fine-tuning jobs."""

    def __init__(
        self,
        client: TogetherClient,
        config: TogetherBackendConfig,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.config = config
        self._sleep = sleep
        self.created = 0

    def submit(
        self,
        body: dict[str, Any],
        study: str,
        number: int,
        journal: Journal,
        before_create: Callable[[], None] = lambda: None,
    ) -> str:
        """The id of this trial's job: recalled, found by key, or created now (and recorded);
        `before_create` runs once, only when a job is about to be created, and may refuse."""
        key, known = job_key(journal, self._find, 8)
        if known:
            return known
        before_create()
        suffix = keyed_suffix(self.config.suffix, study, number, key)

        def create() -> str:
            job = self.client.request(
                "POST", "/fine-tunes", "creating a job", 0, json={**body, "suffix": suffix}
            )
            self.created += 1
            return str(job["id"])

        config = self.config
        retry = Retry(config.max_retries, config.poll_interval, config.poll_max_interval)
        find = lambda: self._find(key)  # noqa: E731
        transient = (TransientError,)
        return create_once(create, find, journal, transient, retry, self._sleep, (RefusedError,))

    def listing(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.client.request("GET", "/fine-tunes", "listing jobs")[
            "data"
        ]
        return jobs

    def _find(self, key: str) -> str | None:
        for job in self.listing():
            if str(job.get("suffix") or "").endswith(f"-{key[:8]}"):
                return str(job["id"])
        return None

    def of_study(self, study_name: str) -> list[dict[str, Any]]:
        tag = f"{self.config.suffix}-{study_tag(study_name)}-t"
        return [job for job in self.listing() if str(job.get("suffix") or "").startswith(tag)]

    def wait(self, job_id: str) -> dict[str, Any]:
        """Poll until the job ends; the completed job, or BackendError naming why not."""
        interval, started, outage = self.config.poll_interval, time.monotonic(), None
        while True:
            try:
                job: dict[str, Any] = self.client.request("GET", f"/fine-tunes/{job_id}", "polling")
                outage = None
            except TransientError:
                # The job runs on regardless: a flaky hour of polling must not fail a paid job.
                outage = outage if outage is not None else time.monotonic()
                if time.monotonic() - outage > POLL_OUTAGE_SECONDS:
                    raise
                job = {"status": "polling"}
            if job["status"] in TERMINAL:
                return _completed(job)
            waited = time.monotonic() - started
            if self.config.job_timeout is not None and waited > self.config.job_timeout:
                # The trial fails and is not run again: say how its paid model gets scored.
                name = job.get("model_output_name") or "MODEL"
                raise BackendError(
                    f"Together job {job_id} is still {job['status']} after {waited:.0f} s "
                    f"(backend.job_timeout={self.config.job_timeout:g}); it keeps running on "
                    "Together and is billed: once it has completed, `harness evaluate "
                    f"EXPERIMENT --model {name}` scores its model"
                )
            self._sleep(interval)
            interval = min(interval * BACKOFF, self.config.poll_max_interval)

    def finish(self, job: dict[str, Any]) -> FinishedJob:
        """A completed job with its checkpoints numbered by epoch (1..n_epochs)."""
        job_id, n_epochs = str(job["id"]), int(job["n_epochs"])
        name = str(job["model_output_name"])
        tokens = job.get("token_count")  # tokens of the training file, one epoch
        done = FinishedJob(job_id, name, None if tokens is None else tokens * n_epochs, n_epochs)
        items = self.client.request("GET", f"/fine-tunes/{job_id}/checkpoints", "checkpoints")
        steps = sorted(int(item["step"]) for item in items.get("data", []))
        total = max(steps, default=0)
        for step in steps:
            epoch = max(1, min(n_epochs, round(step * n_epochs / total))) if total else n_epochs
            model = name if epoch == n_epochs else f"{name}:{step}"
            done.checkpoints.append(JobCheckpoint(epoch, step, model, {"step": float(step)}))
        return done


def billed_usd(job: Mapping[str, Any]) -> float | None:
    """What Together billed a finished job, in dollars (None: not reported, or zero)."""
    price = job.get("total_price")
    if job.get("status") != "completed" or not isinstance(price, int | float) or price <= 0:
        return None
    return float(price) / NANODOLLARS


def _completed(job: dict[str, Any]) -> dict[str, Any]:
    if job["status"] == "completed":
        return job
    if job["status"] == "cancelled":
        raise BackendError(f"Together job {job['id']} was cancelled; no model to evaluate")
    events = [e.get("message", "") for e in job.get("events") or [] if e.get("type") == "job_error"]
    reason = events[-1] if events else "no reason given"
    raise BackendError(f"Together job {job['id']} failed ({reason})")

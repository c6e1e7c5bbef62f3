"""Together dedicated endpoints: one made for each scoring of a fine-tuned model, then deleted.

Together serves a fine-tuned model on a dedicated endpoint (`POST /v1/endpoints`: model,
hardware, one replica), billed per minute by hardware while it runs, until it is stopped or
deleted; serverless LoRA (the model name as is) is not offered for every model. So with
`backend.serving: {kind: dedicated}` each fine-tuned model or checkpoint is scored on an endpoint
of its own:

1. any endpoint a killed run left for the model is deleted: the one in the trial's journal
   (`endpoint_id`), and any live one serving the model (a create whose reply was lost);
2. the endpoint is created (never retried blindly: after a failed create the listing is read
   for it, as for jobs), its id written to the journal before anything waits on it;
3. `GET /v1/endpoints/{id}` is polled until `STARTED` (`ERROR` or `STOPPED` fails the scoring);
4. the caller scores through chat completions with the endpoint's `name`, within a deadline;
5. `DELETE /v1/endpoints/{id}` in a `finally`, and the journal's id cleared.

The budget reserves `serving.max_minutes` of hosting per endpoint, so waiting and scoring stop a
minute before that (the last minute is left for the delete). Hosting is billed by the started
minute from just before the create request to the delete's reply, which is never less than
Together's own count. `inactive_timeout` makes Together stop an endpoint the harness lost (a
killed run's, when no resume deletes it first), so a trial reserves that much more: one endpoint
at a time is live, so one such loss per trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from harness.backends.base import (
    HOSTING_PER_HOUR,
    HOSTING_SINCE,
    SCORING_BILLED,
    Journal,
    MemoryJournal,
    RemoteJob,
)
from harness.backends.together._client import RefusedError, TogetherClient, TransientError
from harness.backends.together.config import TogetherBackendConfig
from harness.errors import BackendError, ConfigError
from harness.records import Cost

T = TypeVar("T")
LIVE = ("PENDING", "STARTING", "STARTED", "STOPPING")
JOURNAL_KEY = "endpoint_id"


@dataclass(frozen=True)
class Hosting:
    """One endpoint's life: its id and the minutes it is billed (started minutes, at least 1)."""

    endpoint_id: str
    minutes: int

    @property
    def hours(self) -> float:
        return self.minutes / 60


class TogetherEndpoints:
    """Creates, waits for and deletes dedicated endpoints; safe to share between threads."""

    def __init__(
        self,
        client: TogetherClient,
        config: TogetherBackendConfig,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.config = config
        self.serving = config.serving
        self._sleep = sleep
        self._clock = clock
        self.created = 0

    def serve(
        self,
        model: str,
        label: str,
        journal: Journal,
        use: Callable[[str, float], T],
        per_hour: float | None = None,
    ) -> tuple[T, Hosting]:
        """Run `use(endpoint name, deadline)` while `model` is on an endpoint of its own; the
        result and what hosting it was billed. `label` (study tag and trial) names it.

        With its hourly rate `per_hour`, the journal notes since when it bills (`HOSTING_SINCE`)
        and at what rate, and once it is deleted adds its minutes to the run's
        `SCORING_BILLED`: a sweep that deletes it after a kill can settle what it cost.

        Raises:
            BackendError: The endpoint failed, did not start in time, or could not be deleted
                (the message names it, and the journal keeps its id for the next run).
        """
        self.clear(model, journal)
        started = self._clock()
        deadline = started + (self.serving.max_minutes - 1) * 60
        if per_hour is not None:  # before the create: its minutes count from its request
            journal.record(HOSTING_PER_HOUR, f"{per_hour:.6f}")
            journal.record(HOSTING_SINCE, f"{time.time():.3f}")
        endpoint_id = self._create(model, label, journal)
        try:
            name = self._until_started(endpoint_id, model, deadline)
            result = use(name, deadline)
        finally:
            self.delete(endpoint_id, journal)
        minutes = max(1, math.ceil((self._clock() - started) / 60))
        if per_hour is not None:  # after the delete cleared the id: a kill between keeps more
            billed = float(journal.recall(SCORING_BILLED) or 0.0) + per_hour * minutes / 60
            journal.record(SCORING_BILLED, f"{billed:.6f}")
        return result, Hosting(endpoint_id, minutes)

    def check_hardware(self) -> None:
        """Refuse `serving.hardware` Together does not list (`GET /v1/hardware`) before any job
        is paid for: every endpoint create would be refused after its job was trained.

        Raises:
            ConfigError: Naming the setting and the hardware Together lists.
        """
        try:
            reply = self.client.request("GET", "/hardware", "listing hardware", retries=1)
        except RefusedError as exc:
            if exc.status != 404:
                raise
            return  # an endpoint without the list: the create says it, as before
        listed = sorted(str(h.get("id")) for h in reply.get("data", []) if isinstance(h, dict))
        if listed and self.serving.hardware not in listed:
            raise ConfigError(
                f"backend.serving.hardware: Together offers no {self.serving.hardware!r} for "
                f"dedicated endpoints (GET /v1/hardware lists {', '.join(listed)})"
            )

    def clear(self, model: str, journal: Journal) -> None:
        """Delete what a killed run left: the journal's endpoint and live ones serving `model`."""
        leftover = journal.recall(JOURNAL_KEY)
        ids = [leftover] if leftover else []
        ids += [e["id"] for e in self.live() if e.get("model") == model and e["id"] not in ids]
        for endpoint_id in ids:
            self.delete(endpoint_id, journal)

    def live(self) -> list[dict[str, Any]]:
        """Every dedicated endpoint of the account still running (or starting, or stopping)."""
        reply = self.client.request(
            "GET", "/endpoints", "listing endpoints", params={"type": "dedicated"}
        )
        return [e for e in reply.get("data", []) if e.get("state") in LIVE]

    def of_study(self, tag: str) -> list[dict[str, Any]]:
        """Live endpoints serving a model whose name carries `tag` (the study's job suffix)."""
        return [e for e in self.live() if tag in str(e.get("model") or "")]

    def release(self, tag: str, held: Collection[str]) -> list[str]:
        """Delete the live endpoints whose model carries `tag` (a study's) and that no running
        trial holds (`held`: ids noted in running trials' journals); their ids."""
        gone = []
        for endpoint in self.of_study(tag):
            endpoint_id = str(endpoint["id"])
            if endpoint_id not in held:
                self.delete(endpoint_id, MemoryJournal())
                gone.append(endpoint_id)
        return gone

    def delete(self, endpoint_id: str, journal: Journal) -> None:
        """Delete an endpoint (already gone is fine) and clear it from the journal."""
        try:
            self.client.request("DELETE", f"/endpoints/{endpoint_id}", "deleting an endpoint")
        except RefusedError as exc:
            if exc.status != 404:
                raise _still_running(endpoint_id, exc) from exc
        except BackendError as exc:
            raise _still_running(endpoint_id, exc) from exc
        if journal.recall(JOURNAL_KEY) == endpoint_id:
            journal.record(JOURNAL_KEY, "")

    def _create(self, model: str, label: str, journal: Journal) -> str:
        body = {
            "model": model,
            "hardware": self.serving.hardware,
            "display_name": f"{self.config.suffix}-{label}",
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "inactive_timeout": self.serving.inactive_timeout,
            "state": "STARTED",
        }
        delay = self.config.poll_interval
        for attempt in range(self.config.max_retries + 1):
            try:
                reply = self.client.request(
                    "POST", "/endpoints", f"creating an endpoint for {model}", 0, json=body
                )
                self.created += 1
                endpoint_id = str(reply["id"])
            except TransientError:
                # The create may have committed: look for it before paying for another.
                found = [e for e in self.live() if e.get("model") == model]
                if not found and attempt < self.config.max_retries:
                    self._sleep(delay)
                    delay = min(delay * 2, self.config.poll_max_interval)
                    continue
                if not found:
                    raise
                endpoint_id = str(found[0]["id"])
            journal.record(JOURNAL_KEY, endpoint_id)  # before waiting: a rerun deletes it
            return endpoint_id
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _until_started(self, endpoint_id: str, model: str, deadline: float) -> str:
        interval = self.config.poll_interval
        while True:
            try:
                endpoint = self.client.request(
                    "GET", f"/endpoints/{endpoint_id}", "waiting for an endpoint"
                )
            except TransientError:
                endpoint = {"state": "unknown (polling failed)"}
            state = endpoint.get("state")
            if state == "STARTED":
                return str(endpoint["name"])
            if state in ("ERROR", "STOPPED"):
                raise BackendError(
                    f"Together endpoint {endpoint_id} for {model} on {self.serving.hardware} is "
                    f"{state}; it was deleted, and the model was not scored"
                )
            if self._clock() > deadline:
                raise BackendError(
                    f"Together endpoint {endpoint_id} for {model} is still {state} near "
                    f"backend.serving.max_minutes ({self.serving.max_minutes}); it was deleted"
                )
            self._sleep(interval)
            interval = min(interval * 1.5, self.config.poll_max_interval)


def endpoint_job(endpoint: Mapping[str, Any], rate: float | None) -> RemoteJob:
    """A live endpoint as a study's paid job, priced at `rate` dollars an hour from its age."""
    minutes = minutes_since(endpoint.get("created_at"))
    cost = None
    if minutes is not None and rate is not None:
        usd = rate * minutes / 60
        cost = Cost(usd=usd, hosting_usd=usd, hosting_hours=minutes / 60)
    status = f"dedicated endpoint {endpoint.get('state')}, billed by the minute until deleted"
    return RemoteJob(str(endpoint["id"]), status, str(endpoint.get("model") or ""), cost)


def minutes_since(created_at: str | None, now: datetime | None = None) -> int | None:
    """Started minutes since an endpoint's `created_at` (None: no parsable time)."""
    if not created_at:
        return None
    try:
        created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    seconds = ((now or datetime.now(UTC)) - created).total_seconds()
    return max(1, math.ceil(seconds / 60))


def _still_running(endpoint_id: str, cause: BackendError) -> BackendError:
    return BackendError(
        f"could not delete Together endpoint {endpoint_id} ({cause}); it may still be billed by "
        f"the minute: delete it at https://api.together.ai/models or with `together endpoints "
        f"delete {endpoint_id}` (the next run of this trial deletes it too)"
    )

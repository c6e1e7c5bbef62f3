"""Creating a paid job exactly once: the job key, the lookup by it, and the hand-made retry.

Shared by every hosted backend (OpenAI's API and its providers, Together). Before a job is
created a random key is written to the trial's journal and sent with the job (in its
`metadata`, or in its `suffix` where the endpoint keeps no metadata); right after, the job id is
written too. A retried trial recalls the id, or, if the sweep died between creating the job and
recording its id, finds the job by its key. The create call itself is never retried blindly.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from harness.backends.base import CREATE_SENT, Journal

SUFFIX_KEY_LENGTH = 8  # hex digits of the job key in a suffix (Nebius, Together: 64 at most)

__all__ = [
    "SUFFIX_KEY_LENGTH",
    "Retry",
    "create_once",
    "job_key",
    "key_in",
    "keyed_suffix",
    "study_tag",
]


def study_tag(study_name: str) -> str:
    """Six hex digits naming a study inside a job suffix."""
    return hashlib.sha256(study_name.encode("utf-8")).hexdigest()[:6]


def keyed_suffix(base: str, study: str, number: int, key: str) -> str:
    """A job suffix that names the study, the trial and the job key: where the key travels on
    an endpoint that keeps no metadata."""
    return f"{base}-{study_tag(study)}-t{number:03d}-{key[:SUFFIX_KEY_LENGTH]}"


def key_in(suffix: str | None) -> str | None:
    """The job key's head a `keyed_suffix` carries, if `suffix` is one."""
    tail = (suffix or "").rsplit("-", 1)[-1]
    keyed = len(tail) == SUFFIX_KEY_LENGTH and all(c in "0123456789abcdef" for c in tail)
    return tail if keyed else None


def job_key(
    journal: Journal, find: Callable[[str], str | None], length: int
) -> tuple[str, str | None]:
    """This trial's job key (made and journalled now if new: a crash after this still finds the
    job) and its job id if one is known: recalled, or found on the server by the key."""
    known = journal.recall("job_id")
    key = journal.recall("job_key")
    if known or not key:
        if not key:
            key = uuid.uuid4().hex[:length]
            journal.record("job_key", key)  # before creating: a crash now still finds the job
        return key, known
    found = find(key)
    if found:
        journal.record("job_id", found)
    return key, found


@dataclass(frozen=True)
class Retry:
    """How often, and how patiently, a failed job creation is tried again."""

    attempts: int  # retries after the first attempt
    delay: float  # seconds before the first retry, doubled each time
    max_delay: float


def create_once(
    create: Callable[[], str],
    find: Callable[[], str | None],
    journal: Journal,
    transient: tuple[type[Exception], ...],
    retry: Retry,
    sleep: Callable[[float], None],
    refused: tuple[type[Exception], ...] = (),
) -> str:
    """Create a paid job, retrying by hand and never blindly; record its id.

    A create whose reply was lost (a 500 or a dropped connection after the server committed)
    may have made a paid job; retrying it blindly makes a second one. So `create` must make no
    automatic retries, and after every transient failure the job is looked up (`find`, by the
    trial's key) before another attempt. A `refused` error is the server's answer that it made
    no job: when no earlier attempt's reply was lost, the create-sent note is cleared, so the
    budget settles the trial at $0.
    """
    delay = retry.delay
    lost = False  # whether an earlier attempt may have made a job all the same
    for attempt in range(retry.attempts + 1):
        # Noted before the request: a reply lost after this may hide a paid job the listing
        # does not show yet, so the budget keeps the trial's reservation (`Budget.settle_failed`).
        journal.record(CREATE_SENT, "true")
        try:
            job_id = create()
        except transient:
            lost = True
            found = find()  # a listing is safe to retry
            if found:
                journal.record("job_id", found)
                return found
            if attempt == retry.attempts:
                raise
            sleep(delay)
            delay = min(delay * 2, retry.max_delay)
            continue
        except refused as exc:  # after `transient`, which may subclass a refusal (a 429 is a 4xx)
            if not lost and _status(exc) not in UNSURE:  # no job, and none from an earlier try
                journal.record(CREATE_SENT, "")
            raise
        journal.record("job_id", job_id)
        return job_id
    raise AssertionError("unreachable: the last attempt returns or raises")


# Answers that do not prove the request made nothing: a timeout or a conflict may come after
# the server acted (a proxy's 408, a 409 for a job already there), and 425 asks to try later.
UNSURE = frozenset({408, 409, 425})


def _status(exc: Exception) -> int | None:
    """The HTTP status of an SDK's (`status_code`) or our client's (`status`) error."""
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    return status if isinstance(status, int) else None

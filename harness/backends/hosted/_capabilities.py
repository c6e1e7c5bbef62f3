"""What every hosted backend can do, and whether its API is a test server on this machine (what
it returns is then synthetic)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from harness.backends.base import Capabilities


def is_loopback(base_url: str | None) -> bool:
    """True when the API is served from this machine (a test server): results are synthetic."""
    if not base_url:
        return False
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WholeTexts:
    """A hosted model's context (tens of thousands of tokens) holds any classification text
    whole: the harness cuts none (`Backend.text_token_limit`)."""

    def text_token_limit(self, labels: Sequence[str]) -> int | None:
        return None


def hosted_capabilities(
    base_url: str | None, max_concurrency: int, deploys_models: bool, hosting_note: str
) -> Capabilities:
    """A hosted backend's capabilities: thread-safe, scores base models, never stops a trial
    early (a job is paid in full before its checkpoints can be scored), and deploys models to
    score them where the provider bills a deployment (`hosting_note` names its journal key)."""
    return Capabilities(
        synthetic=is_loopback(base_url),
        scores_base_model=True,
        max_concurrency=max_concurrency,
        thread_safe=True,
        stops_early=False,
        deploys_models=deploys_models,
        hosting_notes=(hosting_note,),
        bills_jobs=True,
    )

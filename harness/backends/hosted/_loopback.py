"""Whether a hosted API is a test server on this machine: what it returns is synthetic."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


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

"""Where the harness keeps and reaches things: its cache folders, and the URLs of databases and
tracking servers (the driver a plain URL needs, credentials kept out of text).

Everything the harness can rebuild (MLflow store templates, cost calibrations, converted and
unpacked models, tiktoken's encodings) lives under `$XDG_CACHE_HOME/harness`, else
`~/.cache/harness`. The bundled datasets are looked for in `$HARNESS_CACHE_DIR` first, else
`~/.cache/harness` (without `XDG_CACHE_HOME`: where they have always been fetched to, so a user's
verified copies are found again).

Storage URLs carry passwords (`postgresql://user:password@host/db`). Everything the harness writes
where others can read it (MLflow artifacts and tags, log lines, error messages) goes through
`redact_text` first, so a password never leaves the process.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

DATASETS_ENV = "HARNESS_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """`$XDG_CACHE_HOME/harness/<parts>`, else `~/.cache/harness/<parts>` (read at each call, so
    a test or a caller that sets the variable is obeyed)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root, "harness", *parts)


def datasets_dir() -> Path:
    """The bundled datasets' folder: `$HARNESS_CACHE_DIR`, else `~/.cache/harness`."""
    configured = os.environ.get(DATASETS_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "harness"


# A run of path separators (and NUL, which no path may hold).
_SEPARATORS = re.compile(r"[/\\\x00]+")


def path_component(name: str) -> str:
    """`name` (a study's) as one folder name: every run of path separators (`/`, `\\`) becomes
    `-`, so `team/demo` is the folder `team-demo`, not `team/` holding `demo/`; a name that would
    point elsewhere (`.`, `..`, nothing) is `study`. Other names are kept as they are."""
    safe = _SEPARATORS.sub("-", name)
    return safe if safe.strip(".-") else "study"


# --- URLs ------------------------------------------------------------------------------------

REDACTED = "***"
# scheme://user:password@host: the password, up to the last `@` before any whitespace.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)[^\s]*@")
# ...?password=... (libpq and SQLAlchemy accept credentials as query parameters too).
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:password|passwd|pwd|sslpassword|api[_-]?key|token)=)[^&#\s]*",
    re.IGNORECASE,
)
# OpenAI-style API keys, wherever they appear.
_API_KEY = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{8,}")


# Environment variables that hold a secret (every provider's key, PGPASSWORD, MLflow's token):
# their values are blanked wherever they appear, whatever their shape.
_SECRET_VARIABLE = re.compile(r"(API_KEY|_TOKEN|PASSWORD|_SECRET)$")
_SHORTEST_SECRET = 8  # shorter values would blank ordinary words


def redact_text(text: str) -> str:
    """`text` with URL passwords, credential query parameters, API keys and the values of the
    environment's secret variables (`_SECRET_VARIABLE`) blanked out."""
    for name, value in os.environ.items():
        if len(value) >= _SHORTEST_SECRET and _SECRET_VARIABLE.search(name) and value in text:
            text = text.replace(value, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)
    return _API_KEY.sub(f"sk-{REDACTED}", text)


def without_url_passwords(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` URL left out
    (`scheme://user@host`), so a command printed for others to run takes it from `PGPASSWORD`
    or `~/.pgpass`: libpq prefers a password in the URL, so a blanked one (`***`) would fail."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head'][:-1]}@", text)


# SQLAlchemy's own words for a scheme it has no dialect for, and its link under every error.
_NO_DIALECT = re.compile(r"Can't load plugin: sqlalchemy\.dialects:(?P<scheme>[^.\s]+)")
_ERROR_CLASS = re.compile(r"^\([\w.]+\) ")  # "(psycopg.OperationalError) " before the text


def storage_problem(exc: BaseException) -> str:
    """Why a study storage could not be opened, in one line: the database driver's words without
    SQLAlchemy's exception class and link, or the mistyped URL scheme named; secrets blanked."""
    text = str(exc)
    if found := _NO_DIALECT.search(text):
        return (
            f"unknown URL scheme {found['scheme']!r} (use postgresql://USER@HOST:PORT/DATABASE "
            "or sqlite:///PATH)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("(Background on this error")]
    return redact_text(_ERROR_CLASS.sub("", " ".join(lines)) or type(exc).__name__)


def with_driver(url: str) -> str:
    """A SQLAlchemy URL that works with the installed drivers.

    `postgresql://` means psycopg2 to SQLAlchemy; the harness installs psycopg 3, so a plain URL
    (and libpq's `postgres://` spelling) becomes `postgresql+psycopg://` unless psycopg2 is
    installed. Other URLs are returned unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
        return f"postgresql+psycopg://{rest}"
    return f"postgresql://{rest}"

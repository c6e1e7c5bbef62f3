"""Real services for the many-workers tests: a PostgreSQL server and an MLflow tracking server,
each started in a temp directory on 127.0.0.1 at a free port and stopped at teardown.

PostgreSQL comes from Debian's `postgresql` package (`.ci/run` installs it); the fixture skips
with the reason when its binaries are missing. PostgreSQL refuses to run as root, so as root the
cluster is created and run as the `postgres` user (or `nobody`) through `runuser`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.tracking.store import ensure_sqlite_store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: on PATH, else Debian's newest under /usr/lib."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(candidates[-1]).parent if candidates else None


def _version(path: str) -> int:
    part = Path(path).parents[1].name
    return int(part) if part.isdigit() else 0


def _runner() -> tuple[list[str], int | None]:
    """How to run PostgreSQL's commands: as this user, or as root through `runuser`."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return ["runuser", "-u", name, "--"], user.pw_uid
    pytest.skip("running as root and neither a `postgres` nor a `nobody` user to run PostgreSQL")


@dataclass
class Postgres:
    """A running PostgreSQL server; `url(database)` carries the password."""

    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """initdb a cluster in a temp dir, start it on 127.0.0.1 at a free port, stop it after."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
            "`apt-get install -y postgresql` (as .ci/run does) to run the many-workers tests"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without `runuser` to start PostgreSQL as another user")
    prefix, uid = _runner()
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    password = "pw-" + secrets.token_hex(8)
    (root / "pwfile").write_text(password + "\n")
    if uid is not None:
        for path in (root, root / "pwfile"):
            os.chown(path, uid, -1)
    data, port = root / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, cwd=root, timeout=120)

    try:
        pg(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "harness",
            "--auth=scram-sha-256",
            f"--pwfile={root / 'pwfile'}",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        yield Postgres(port=port, user="harness", password=password)
    finally:
        with contextlib.suppress(Exception):
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MlflowServer:
    uri: str
    artifacts: Path


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1 at a free port over a sqlite store in `root`, artifacts
    proxied into `root/artifacts`; stopped after."""
    db = root / "mlflow-server.db"
    ensure_sqlite_store(f"sqlite:///{db}")  # migrated in ms instead of seconds
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "mlflow-server.log").open("wb")
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _healthy(uri):
            if process.poll() is not None or time.monotonic() > deadline:
                output = (root / "mlflow-server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not start: {output}")
            time.sleep(0.25)
        yield MlflowServer(uri=uri, artifacts=root / "artifacts")
    finally:
        _stop_group(process)
        log.close()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it runs uvicorn workers), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False

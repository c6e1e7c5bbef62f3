"""Run a web UI (MLflow's, optuna-dashboard) as a supervised child process on 127.0.0.1.

`harness ui` and `harness dashboard` both come here, so they behave alike:

- a busy port is an error before anything is printed or started;
- the server runs in a process group of its own, so a terminal's Ctrl-C reaches the harness
  only, which stops the whole group with SIGTERM (the servers shut down quietly on SIGTERM,
  where SIGINT gives Python servers a KeyboardInterrupt traceback each), then SIGKILL after a
  grace period; SIGTERM and SIGHUP are handled the same way, and the exit is quiet;
- the server is asked to die with the harness (Linux `PR_SET_PDEATHSIG`), so killing the harness
  with SIGKILL leaves no server listening either;
- the links are printed once the server answers, and a server that exits before then, or
  later on its own, is an error with its exit code (its own output is above it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from harness.errors import ConfigError, HarnessError

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 300.0  # the MLflow UI takes ~25 s to import on a busy 2-core machine
STOP_GRACE_S = 10.0
_POLL_S = 0.25
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Run in the child before it becomes the server: die with the harness (Linux; a no-op elsewhere),
# and stop at once if the harness died before the request was made.
_LAUNCHER = (
    "import ctypes, os, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@dataclass(frozen=True)
class Server:
    """A server command and how to tell that it is up.

    `command[0]` must be an executable path (it is exec'd); `env` is the whole environment.
    """

    name: str
    command: Sequence[str]
    port: int
    health_path: str
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def check_port(port: int) -> None:
    """ConfigError unless `port` is free on 127.0.0.1 (bound the way the servers bind it)."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected a port number from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn and wsgiref do: a port held only by closed connections (TIME_WAIT) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"--port {port}: {HOST}:{port} is already in use (another server?); "
                    f"stop it or choose another port, e.g. --port {port + 1}"
                ) from None
            raise ConfigError(f"--port {port}: cannot listen on {HOST}:{port}: {exc}") from None


def serve(server: Server, on_ready: Callable[[], None]) -> None:
    """Start `server`, call `on_ready` once it answers, and return when it has been stopped.

    Returns normally after a SIGINT, SIGTERM or SIGHUP (the server group is stopped first);
    raises HarnessError when the server exits on its own or never answers.
    """
    received: list[int] = []

    def stop_requested(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, stop_requested) for sig in _STOP_SIGNALS}
    try:
        sys.stdout.flush()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *server.command],
            env=dict(server.env),
            stdin=subprocess.DEVNULL,
            process_group=0,  # the terminal's Ctrl-C goes to the harness, which stops the group
        )
        try:
            _supervise(server, proc, received, on_ready)
        finally:
            stop_group(proc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(
    server: Server,
    proc: subprocess.Popen[bytes],
    received: list[int],
    on_ready: Callable[[], None],
) -> None:
    deadline, ready = time.monotonic() + STARTUP_TIMEOUT_S, False
    while not received:
        code = proc.poll()
        if code is not None:
            if not ready:
                check_port(server.port)  # taken meanwhile by another server: say so
            when = "stopped" if ready else "exited before it answered"
            raise HarnessError(f"the {server.name} {when} (exit code {code}); its output is above")
        if not ready:
            url = server.base_url + server.health_path
            if _answers(url) and _listens(proc.pid, server.port) is not False:
                ready = True
                on_ready()
                continue
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"the {server.name} did not answer on {server.base_url} within "
                    f"{STARTUP_TIMEOUT_S:.0f} s; its output is above"
                )
        time.sleep(_POLL_S)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _listens(pgid: int, port: int) -> bool | None:
    """Whether a process of group `pgid` listens on 127.0.0.1:`port` (None: cannot tell here).

    Another server that took the port after `check_port` answers the health check as well;
    only a listener of our own counts. Linux only: reads /proc/net/tcp and the group's fds; where
    /proc shows no listener at all on the port, it cannot tell.
    """
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    local = f"0100007F:{port:04X}"  # 127.0.0.1 in /proc's little-endian hex
    inodes = {
        f"socket:[{cols[9]}]"
        for cols in (line.split() for line in table)
        if cols[1] == local and cols[3] == "0A"  # TCP_LISTEN
    }
    if not inodes:
        return None
    for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pgid:
                fds = Path(f"/proc/{pid}/fd").iterdir()
                if any(os.readlink(fd) in inodes for fd in fds):
                    return True
    return False


def stop_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to the child's process group, then SIGKILL to what is left after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break  # the group is gone
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its children may linger a moment: give them the same grace.
        if not _group_gone(proc.pid, wait):
            continue
        break
    proc.poll()


def _group_gone(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(0.05)
    return False

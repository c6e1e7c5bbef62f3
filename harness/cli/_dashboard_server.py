"""The optuna-dashboard server process that `harness dashboard` starts and supervises.

Run as `python -m harness.cli._dashboard_server PORT` with the storage URL in the environment
variable `HARNESS_DASHBOARD_STORAGE`, never on the command line: any user on the machine can read
a process's arguments (`ps`), and a PostgreSQL URL carries a password. It serves on 127.0.0.1
only, logs no line per request, and stops quietly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from socketserver import ThreadingMixIn
from types import FrameType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

STORAGE_ENV = "HARNESS_DASHBOARD_STORAGE"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connections never hold up the exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per request: the terminal shows the harness's links, not access logs."""


def main(argv: list[str]) -> None:
    """Serve optuna-dashboard for the storage in $HARNESS_DASHBOARD_STORAGE on argv[0]'s port."""
    from optuna_dashboard import wsgi

    port = int(argv[0])
    app = wsgi(os.environ.pop(STORAGE_ENV))
    server = make_server("127.0.0.1", port, app, _Server, _QuietHandler)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)  # leaves serve_forever; the socket is closed below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])

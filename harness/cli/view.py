"""Commands that open the tracking store in a browser."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from harness.cli.common import app, console, err_console, user_errors


@app.command()
@user_errors
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    experiment: Annotated[
        str | None, typer.Option(help="Use this experiment's tracking URI.")
    ] = None,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the project's tracking store (a tracking server,
    `http(s)://`, serves its own UI: its address is printed instead)."""
    from harness.config import load_experiment
    from harness.tracking.store import chart_view_links, is_remote, tracking_uri
    from harness.urls import redact_text

    uri = tracking_uri(load_experiment(experiment) if experiment else None)
    if is_remote(uri):
        _remote_ui(uri)
        return
    base = f"http://127.0.0.1:{port}"
    console.print(f"MLflow UI for {redact_text(uri)} at {base}  (Ctrl-C to stop)", soft_wrap=True)
    for name, link in chart_view_links(uri, base).items():
        console.print(f"  {name}: every trial charted by test accuracy: {link}", soft_wrap=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # One worker and no GenAI job runner: the UI answers in seconds instead of ~30 s on 2 cores.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    sys.stdout.flush()
    # Become the server, so Ctrl-C and SIGTERM reach it directly and nothing is left orphaned.
    os.execve(sys.executable, command, env)


def _remote_ui(uri: str) -> None:
    """Print a tracking server's UI address and chart links; nothing is started here."""
    from harness.tracking.store import chart_view_links
    from harness.urls import redact_text

    base = uri.rstrip("/")
    console.print(f"MLflow UI: {redact_text(base)}  (the tracking server's own)", soft_wrap=True)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # say so now if it is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        links = chart_view_links(uri, base)
    except Exception as exc:  # the server is down or refuses us: the address is still the answer
        err_console.print(f"warning: {redact_text(str(exc))[:300]}", markup=False, highlight=False)
        return
    for name, link in links.items():
        line = f"  {name}: every trial charted by test accuracy: {redact_text(link)}"
        console.print(line, soft_wrap=True, markup=False, highlight=False)

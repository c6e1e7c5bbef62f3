"""Commands that open the results in a browser: the MLflow UI and optuna-dashboard.

Both serve on 127.0.0.1 from a supervised child process (`harness.cli._serve`): a busy port is
an error, Ctrl-C and SIGTERM stop the server and exit quietly.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from harness.cli.common import SetOption, app, console, err_console, load_target, user_errors
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.tracking.views import ViewLinks

PortOption = Annotated[int, typer.Option(help="Port on 127.0.0.1.")]
# MLflow 3.17 imports `starlette.middleware.wsgi`, which Starlette 1.x deprecates with a
# UserWarning printed at every start of the UI: MLflow's to fix, nothing a user can act on.
_STARLETTE_WARNING = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"
F = TypeVar("F", bound=Callable[..., Any])


def _quiet_interrupt(func: F) -> F:
    """Ctrl-C before the server starts: exit 130 without the sweep's "resume" advice."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors
@_quiet_interrupt
def ui(
    port: PortOption = 5000,
    experiment: Annotated[
        str | None,
        typer.Option(metavar="EXPERIMENT", help="Use this experiment's (or study's) tracking URI."),
    ] = None,
    set_: SetOption = None,
) -> None:
    """The MLflow UI on 127.0.0.1 over the project's tracking store, with a saved view of the
    trials (a tracking server, `http(s)://`, serves its own UI: its address is printed instead)."""
    from harness.cli._serve import Server, check_port, serve
    from harness.locations import redact_text
    from harness.tracking.store import is_remote, sqlite_path, tracking_uri

    target = load_target(experiment, set_) if experiment else None
    uri = tracking_uri(target)
    if is_remote(uri):
        _remote_ui(uri)
        return
    check_port(port)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ConfigError(
            f"no MLflow store at {db}: run `harness sweep EXPERIMENT` in this folder first, "
            "or point --experiment or MLFLOW_TRACKING_URI at the store"
        )
    server = Server("MLflow UI", _mlflow_command(port), port, "/health", _mlflow_env(uri))
    links = _view_links(uri, server.base_url)
    notes = _killed_runs(target)
    console.print(f"Starting the MLflow UI for {redact_text(uri)} ...", soft_wrap=True)

    def ready() -> None:
        console.print(f"MLflow UI at {server.base_url}  (Ctrl-C to stop)", soft_wrap=True)
        _print_links(links)
        for note in notes:
            console.print(f"  {note}", soft_wrap=True, markup=False, highlight=False)

    serve(server, ready)
    err_console.print("MLflow UI stopped.")


def _killed_runs(target: Any) -> list[str]:
    """Trials whose runs the MLflow UI shows RUNNING, their worker on this machine gone (as
    `harness dashboard` names them), from the SQLite study storage of the experiment `target`,
    or the project's default one where it exists. A storage that cannot be read adds nothing:
    the UI is still worth opening."""
    from harness.config import DEFAULT_STORAGE
    from harness.locations import with_driver
    from harness.tracking.store import absolute_sqlite, sqlite_path

    url = with_driver(absolute_sqlite(target.config.study.storage if target else DEFAULT_STORAGE))
    db = sqlite_path(url)
    if db is None or not db.is_file():  # a database server: the UI never waits on it
        return []
    try:
        return _unseen_there(url, None)[1]
    except Exception:  # an unreachable or foreign storage: nothing to say about it
        return []


def _mlflow_command(port: int) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "ui"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # Warnings and errors only: the harness says when the server is up and where.
    return [*command, "--uvicorn-opts", "--log-level warning"]


def _mlflow_env(uri: str) -> dict[str, str]:
    env = dict(os.environ)
    # The store in the environment, not in the arguments that `ps` shows everyone (a database
    # URL has a password); the registry is the same store (said explicitly: one line less).
    env["MLFLOW_BACKEND_STORE_URI"] = env["MLFLOW_REGISTRY_STORE_URI"] = uri
    # No GenAI job runner (eight more processes) and one worker: the UI answers in seconds
    # instead of ~30 s on 2 cores. No usage telemetry from a local UI.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env["PYTHONWARNINGS"] = ",".join(filter(None, (env.get("PYTHONWARNINGS"), _STARLETTE_WARNING)))
    return env


def _view_links(uri: str, base: str) -> dict[str, ViewLinks]:
    """The saved view's links per experiment; none (with a warning) if it cannot be written."""
    from harness.locations import redact_text
    from harness.tracking.views import saved_view_links

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's own deprecations, not the user's business
            return saved_view_links(uri, base)
    except Exception as exc:  # a read-only or unreachable store: the UI is still worth opening
        message = f"warning: no saved view: {redact_text(str(exc))[:300]}"
        err_console.print(message, markup=False, highlight=False)
        return {}


def _print_links(links: dict[str, ViewLinks]) -> None:
    from harness.locations import redact_text

    for name, link in links.items():
        for line in (
            f"  {name}: trials sorted by validation accuracy: {link.table}",
            f"  {name}: accuracy vs cost charts: {link.charts}",
        ):
            console.print(redact_text(line), soft_wrap=True, markup=False, highlight=False)
    if links:
        for line in (
            "  A shared view: click 'Override saved view' to keep your changes to it; clear the",
            "  search box (trials only) to see each study's run and its report.",
        ):
            console.print(line, markup=False, highlight=False)


def _remote_ui(uri: str) -> None:
    """Print a tracking server's UI address and saved-view links; nothing is started here."""
    from harness.locations import redact_text

    base = uri.rstrip("/")
    console.print(f"MLflow UI: {redact_text(base)}  (the tracking server's own)", soft_wrap=True)
    if (down := _unreachable(uri)) is not None:
        # MLflow's own request error, cut to fit, ended before its reason ("... Failed ").
        err_console.print(
            f"warning: the tracking server {redact_text(base)} does not answer ({down}): "
            "no saved view; start it and run `harness ui` again",
            markup=False,
            highlight=False,
        )
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # say so now if it is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    _print_links(_view_links(uri, base))


def _unreachable(uri: str) -> str | None:
    """Why nothing accepts a connection at the tracking server's address; None if something
    does (whether it is an MLflow server, its API says)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=10):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


@app.command()
@user_errors
@_quiet_interrupt
def dashboard(
    experiment: Annotated[
        str | None,
        typer.Argument(
            metavar="EXPERIMENT",
            help="Experiment file, its name in experiments/, or a study's name (default: every "
            "study in mlruns/optuna.db).",
            show_default=False,
        ),
    ] = None,
    port: PortOption = 8080,
    set_: SetOption = None,
) -> None:
    """optuna-dashboard on 127.0.0.1 over the study storage: the Pareto front, parameter
    importance, every trial, updated live while a sweep runs."""
    from harness.cli._dashboard_server import STORAGE_ENV
    from harness.cli._serve import Server, check_port, serve
    from harness.locations import redact_text

    check_port(port)
    url, page, study = _dashboard_target(experiment, set_)
    label, notes = _unseen_there(url, study or None)
    command = [sys.executable, "-m", "harness.cli._dashboard_server", str(port)]
    # The URL travels in the environment, never in the arguments, which `ps` shows everyone.
    env = {**os.environ, STORAGE_ENV: url}
    server = Server("optuna-dashboard", command, port, "/api/meta", env)
    shown = url.replace("postgresql+psycopg://", "postgresql://", 1)  # as the user typed it
    console.print(f"Starting optuna-dashboard for {redact_text(shown)} ...", soft_wrap=True)

    def ready() -> None:
        console.print(f"optuna-dashboard at {server.base_url}  (Ctrl-C to stop)", soft_wrap=True)
        what = f"study {label}: Pareto front, history, importance" if study else "the studies"
        console.print(f"  {what}: {server.base_url}{page}", soft_wrap=True, markup=False)
        for note in notes:
            console.print(f"  {note}", soft_wrap=True, markup=False, highlight=False)

    serve(server, ready)
    err_console.print("optuna-dashboard stopped.")


def _dashboard_target(experiment: str | None, set_: list[str] | None) -> tuple[str, str, str]:
    """(storage URL, page to open, study name or "") for `harness dashboard`.

    With an experiment, its study must exist (a clear error otherwise). Objectives get names
    (`valid_accuracy`, `cost_usd`) where a harness study has none, so the dashboard labels its
    axes with them instead of "Objective 0" and "Objective 1": the named study's, or without an
    experiment every harness study's in the storage.
    """
    from harness.config import DEFAULT_STORAGE
    from harness.locations import with_driver
    from harness.sweep.storage import name_objectives
    from harness.sweep.study import load_existing_study
    from harness.tracking.store import absolute_sqlite, sqlite_path

    if experiment is None:
        url = absolute_sqlite(DEFAULT_STORAGE)
        db = sqlite_path(url)
        if db is not None and not db.is_file():
            raise ConfigError(
                f"no study storage at {db}: run `harness sweep EXPERIMENT` in this folder "
                "first, or name the experiment: `harness dashboard EXPERIMENT`"
            )
        name_harness_objectives(url)
        return url, "/dashboard", ""
    exp = load_target(experiment, set_)
    study = load_existing_study(exp)
    name_objectives(study)
    url = with_driver(absolute_sqlite(exp.config.study.storage))
    return url, f"/dashboard/studies/{study._study_id}", exp.study_name


def name_harness_objectives(url: str) -> None:
    """Name the objectives of every study the harness made in the storage at `url` (those
    made before the sweep named them); other studies there are left as they are."""
    import optuna

    from harness.cli.common import open_storage
    from harness.sweep.storage import name_objectives
    from harness.tracking.record import EXPERIMENT_YAML

    storage = open_storage(url)
    for summary in storage.get_all_studies():
        if EXPERIMENT_YAML in summary.user_attrs:
            name_objectives(optuna.load_study(study_name=summary.study_name, storage=storage))


def _unseen_there(url: str, name: str | None) -> tuple[str, list[str]]:
    """What the dashboard's pages do not say that `harness trials` does: the named study's label
    (`(synthetic: test server)` where a test server ran it), and a line per harness study (the
    named one alone, if any) whose trials it shows Running have a worker on this machine that
    is gone (`killed`: the next `harness sweep` fails them and runs them again)."""
    import optuna

    from harness.cli.common import open_storage
    from harness.sweep.study import worker_gone
    from harness.tracking.journal import ran_on_a_test_server
    from harness.tracking.record import EXPERIMENT_YAML

    storage = open_storage(url)
    label, notes = name or "", []
    for summary in storage.get_all_studies():
        if summary.study_name != name and (name or EXPERIMENT_YAML not in summary.user_attrs):
            continue
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
        if summary.study_name == name and ran_on_a_test_server(trials):
            label += " (synthetic: test server)"
        if gone := [str(t.number) for t in trials if worker_gone(t)]:
            one = len(gone) == 1
            notes.append(
                f"study {summary.study_name}: {'trial' if one else 'trials'} {', '.join(gone)} "
                f"{'shows' if one else 'show'} Running there, but "
                f"{'its worker is' if one else 'their workers are'} gone (`harness trials`: "
                "killed); the next `harness sweep` fails and runs again what it ran"
            )
    return label, notes

"""`harness ui` and `harness dashboard` as processes: a busy port, a server that dies at start,
SIGTERM and Ctrl-C (stop the server, free the port, exit quietly), and a PostgreSQL password
that is never printed nor passed on a command line.

The supervision (`harness.cli._serve`) is checked first against small real servers
(`python -m http.server`), then through the real commands. `harness ui` stopped by SIGTERM is
checked in `test_ui_browser.py`, on the server its browser tests use (an MLflow UI takes
10 to 60 s to start on 2 cores).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from harness.cli._serve import Server, check_port, serve
from harness.cli.view import name_harness_objectives
from harness.config import load_experiment
from harness.errors import ConfigError, HarnessError
from harness.locations import with_driver
from harness.sweep.search_space import load_search_space
from harness.sweep.study import open_study
from harness.tracking.record import EXPERIMENT_YAML, STUDY_TAG, TRIAL_TAG
from harness.tracking.store import ensure_sqlite_store
from harness.tracking.views import SHARED_VIEW_TAG, saved_view_links
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import review_rows, write_csv, write_experiment
from tests.services import free_port, postgres_server

HTTP_SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]


@contextlib.contextmanager
def _listening(port: int) -> Iterator[socket.socket]:
    """Something else listening on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock


@contextlib.contextmanager
def _foreign_http_server(port: int, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A web server that is not ours, answering on 127.0.0.1:port."""
    proc = subprocess.Popen([*HTTP_SERVER, str(port)], cwd=cwd, stderr=subprocess.DEVNULL)
    try:
        _wait_for_listener(port, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_listener(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def _port_is_free(port: int) -> bool:
    try:
        check_port(port)
    except ConfigError:
        return False
    return True


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


# --- the supervision, against small real servers -------------------------------------------


def test_a_server_that_dies_at_start_is_one_clear_error(tmp_path: Path) -> None:
    server = Server("test server", [sys.executable, "-c", "raise SystemExit(3)"], free_port(), "/")
    ready: list[bool] = []
    with pytest.raises(HarnessError, match=r"test server exited before it answered \(exit code 3"):
        serve(server, lambda: ready.append(True))
    assert not ready


def test_another_server_that_takes_the_port_meanwhile_is_not_taken_for_ours(
    tmp_path: Path,
) -> None:
    """Checked free, then taken by someone else before our slow server binds: the other
    server answers the health check, but only a listener of our own counts."""
    port = free_port()
    slow_to_fail = [sys.executable, "-c", "import time; time.sleep(2)"]
    ready: list[bool] = []
    with _foreign_http_server(port, tmp_path), pytest.raises(ConfigError, match="already in use"):
        serve(Server("test server", slow_to_fail, port, "/"), lambda: ready.append(True))
    assert not ready


def test_sigterm_stops_the_server_and_frees_the_port(tmp_path: Path) -> None:
    port, children = free_port(), set()
    server = Server("test server", [*HTTP_SERVER, str(port)], port, "/")

    def ready() -> None:
        children.update(_descendants(os.getpid()))
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a service manager would

    serve(server, ready)  # returns: a requested stop is not an error
    assert children, "the server ran as a child"
    assert not any(_alive(pid) for pid in children)
    assert _port_is_free(port)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "handlers are restored"


def test_a_server_dies_with_a_harness_killed_by_sigkill(tmp_path: Path) -> None:
    """SIGKILL cannot be forwarded: the server asked the kernel to stop it with its parent."""
    port = free_port()
    script = (
        "import sys\n"
        "from harness.cli._serve import Server, serve\n"
        f"command = {[*HTTP_SERVER, str(port)]!r}\n"
        f"serve(Server('test server', command, {port}, '/'), lambda: print('ready', flush=True))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    children: set[int] = set()
    try:
        assert proc.stdout is not None
        assert "ready\n" in iter(proc.stdout.readline, ""), "the server never answered"
        children = _descendants(proc.pid)
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert children and not any(_alive(pid) for pid in children)
        assert _port_is_free(port)
    finally:
        proc.kill()
        for pid in children:
            if _alive(pid):  # only where the test failed: the server outlived the harness
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --- the saved view -------------------------------------------------------------------


def test_the_saved_view_is_stored_once_and_selects_the_trials_by_accuracy(tmp_path: Path) -> None:
    """The view lives in an experiment tag; its filter and sort, run by MLflow itself, give the
    trials (not the study's run) most accurate first."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    ensure_sqlite_store(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("tiny")
    study = client.create_run(experiment_id, run_name="study tiny", tags={STUDY_TAG: "tiny"})
    for number, accuracy in enumerate((0.6, 0.9, 0.75)):
        tags = {TRIAL_TAG: str(number), "mlflow.parentRunId": study.info.run_id}
        run = client.create_run(experiment_id, run_name=f"t00{number}", tags=tags)
        client.log_metric(run.info.run_id, "valid_accuracy_final", accuracy)

    # `harness compare` logs its reports in an experiment of their own: runs, but no trials.
    compare = client.create_experiment("harness-compare")
    client.create_run(compare, run_name="demo vs demo_mpnet", tags={STUDY_TAG: "demo"})
    links = saved_view_links(uri, "http://127.0.0.1:5000")
    assert saved_view_links(uri, "http://127.0.0.1:5000") == links  # idempotent
    # Found by walking the clients: its link opened an empty table of "trials".
    assert list(links) == ["tiny"]
    key = links["tiny"].table.rsplit("viewStateShareKey=", 1)[1]
    assert links["tiny"].charts == links["tiny"].table + "&compareRunsMode=CHART"
    tags = client.get_experiment(experiment_id).tags
    assert [k for k in tags if k.startswith(SHARED_VIEW_TAG)] == [SHARED_VIEW_TAG + key]
    state = json.loads(tags[SHARED_VIEW_TAG + key])
    order = f"{state['orderByKey']} {'ASC' if state['orderByAsc'] else 'DESC'}"
    found = client.search_runs([experiment_id], state["searchFilter"], order_by=[order])
    assert [r.info.run_name for r in found] == ["t001", "t002", "t000"]
    # Found by walking two studies of one experiment file: their trials share the experiment,
    # both named t000..., each with `pareto=true` on its own study's front, and no column said
    # which study a row was; nor which runs a test server made.
    for tag in (STUDY_TAG, "synthetic"):
        assert (
            f"tags.`{tag}`" in state["selectedColumns"] and f"tags.`{tag}`" in state["columnOrder"]
        )


# --- the commands: errors before anything starts ------------------------------------------


@pytest.mark.parametrize("command", ["ui", "dashboard"])
def test_a_busy_port_is_an_error_before_anything_is_printed(command: str) -> None:
    port = free_port()
    with _listening(port):
        result = run_cli(command, "--port", str(port))
    assert_clean_error(result, f"--port {port}", "already in use", f"--port {port + 1}")
    assert result.stdout == "", "no links for a UI that is not there"


@pytest.mark.parametrize("command", ["ui", "dashboard"])
def test_a_port_out_of_range_is_an_error(command: str) -> None:
    assert_clean_error(run_cli(command, "--port", "70000"), "--port 70000", "1 to 65535")


def test_ui_without_a_store_says_where_it_looked(tmp_path: Path) -> None:
    result = run_cli("ui", "--port", str(free_port()))
    assert_clean_error(result, f"no MLflow store at {tmp_path}/mlruns/mlflow.db", "harness sweep")
    assert not (tmp_path / "mlruns").exists(), "no empty store left behind"


def test_dashboard_without_a_study_says_so(tmp_path: Path) -> None:
    result = run_cli("dashboard", "--port", str(free_port()))
    assert_clean_error(result, f"no study storage at {tmp_path}/mlruns/optuna.db")
    path = write_experiment(tmp_path, write_csv(tmp_path / "r.csv", review_rows(5)))
    result = run_cli("dashboard", str(path), "--port", str(free_port()))
    assert_clean_error(result, "no study storage", f"harness sweep {path}")


def test_every_harness_study_names_its_objectives_for_optuna_and_the_dashboard(
    tmp_path: Path,
) -> None:
    # Found by walking the clients: a study was named only when `harness dashboard STUDY`
    # opened it, so `harness dashboard` of every study, and `optuna.load_study`, said
    # "Objective 0" and "Objective 1" for the others.
    path = write_experiment(tmp_path, write_csv(tmp_path / "r.csv", review_rows(5)))
    experiment = load_experiment(str(path))
    open_study(
        experiment, load_search_space(experiment.resolve_path(experiment.config.search_space))
    )
    url = "sqlite:///mlruns/optuna.db"
    assert optuna.load_study(study_name="tiny", storage=url).metric_names == [
        "valid_accuracy",
        "cost_usd",
    ]
    older = optuna.create_study(
        study_name="older", storage=url, directions=["maximize", "minimize"]
    )
    older.set_user_attr(EXPERIMENT_YAML, "name: older\n")  # a harness study from before
    optuna.create_study(study_name="theirs", storage=url, directions=["maximize", "minimize"])
    name_harness_objectives(url)  # what `harness dashboard` without EXPERIMENT does first
    named = {
        n: optuna.load_study(study_name=n, storage=url).metric_names for n in ("older", "theirs")
    }
    assert named == {"older": ["valid_accuracy", "cost_usd"], "theirs": None}  # not ours to name


# --- the commands as real processes -----------------------------------------------------


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`harness ARGS` in a fresh process (its own session, as in a terminal of its own)."""
    out, err = (tmp_path / "stdout").open("w"), (tmp_path / "stderr").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=tmp_path,
        stdout=out,
        stderr=err,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def _wait_for_output(tmp_path: Path, proc: subprocess.Popen[str], needle: str) -> str:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        text = (tmp_path / "stdout").read_text()
        if needle in text:
            return text
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    proc.kill()
    err = (tmp_path / "stderr").read_text()
    raise AssertionError(f"{needle!r} never printed:\n{(tmp_path / 'stdout').read_text()}{err}")


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, set[int]]:
    """Send `sig` to the harness alone; its exit code and the processes it had started."""
    children = _descendants(proc.pid)
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60), children
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_dashboard_on_postgres_never_shows_the_password_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    with postgres_server() as postgres:
        url = postgres.create_database("studies")
        path = write_experiment(
            tmp_path,
            write_csv(tmp_path / "r.csv", review_rows(5)),
            study={"storage": url, "n_trials": 1},
        )
        study = optuna.create_study(
            study_name="tiny", storage=with_driver(url), directions=["maximize", "minimize"]
        )
        study.add_trial(
            optuna.trial.create_trial(
                params={"batch_size": 8},
                distributions={"batch_size": optuna.distributions.CategoricalDistribution([8])},
                values=[0.8, 0.001],
            )
        )
        port = free_port()
        proc = _start(tmp_path, "dashboard", str(path), "--port", str(port))
        out = _wait_for_output(tmp_path, proc, "optuna-dashboard at")
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _descendants(proc.pid)]
        assert f"http://127.0.0.1:{port}/dashboard/studies/" in out
        code, children = _stop(proc, signal.SIGINT)  # Ctrl-C, as a terminal sends it
    err = (tmp_path / "stderr").read_text()
    assert postgres.password not in out + err
    assert "postgresql://harness:***@" in out and "+psycopg" not in out, out  # as typed
    assert commands and not any(postgres.password.encode() in c for c in commands)
    assert code == 0, err
    assert not any(_alive(pid) for pid in children) and _port_is_free(port)
    assert err.strip() == "optuna-dashboard stopped.", err


def test_dashboard_says_a_study_ran_on_a_test_server_as_trials_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found walking a sweep against the fake OpenAI server: `trials` titled it "(synthetic:
    # test server)", `studies` said so too, while `harness dashboard` pointed at "study ...:
    # Pareto front, history, importance" as at any real study, and the dashboard shows nothing
    # that says its figures prove the plumbing only.
    from harness.cli import _serve
    from harness.tracking.record import SYNTHETIC_TAG, journal_key

    path = write_experiment(tmp_path, write_csv(tmp_path / "r.csv", review_rows(5)))
    experiment = load_experiment(str(path))
    handle = open_study(
        experiment, load_search_space(experiment.resolve_path(experiment.config.search_space))
    )
    monkeypatch.setattr(_serve, "serve", lambda server, ready: ready())  # no server: its lines

    def link_line() -> str:
        result = run_cli("dashboard", str(path), "--port", str(free_port()))
        assert result.exit_code == 0, result.output
        return next(line for line in result.stdout.splitlines() if "study tiny" in line)

    assert "synthetic" not in link_line()
    synthetic = {journal_key(SYNTHETIC_TAG): "true"}
    handle.study.add_trial(optuna.trial.create_trial(values=[0.5, 0.01], user_attrs=synthetic))
    assert "study tiny (synthetic: test server): Pareto front" in link_line()
    assert "synthetic" in run_cli("trials", str(path)).stdout.splitlines()[0]


def test_the_charts_parallel_coordinates_show_the_training_set_size() -> None:
    # Found walking the demo's charts: its search space samples four hyperparameters (the
    # training-set size is what its fidelity sampler climbs), and the parallel-coordinates chart
    # showed three of them: what bought accuracy there could not be seen.
    from harness.tracking.views import trials_view_state

    (parallel,) = [c for c in trials_view_state()["compareRunCharts"] if c["type"] == "PARALLEL"]
    demo = load_search_space(Path(__file__).parents[1] / "search_spaces" / "demo.yaml")
    assert set(demo.distributions) <= set(parallel["selectedParams"]), parallel


def test_dashboard_and_ui_say_which_trials_they_show_running_were_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found walking a sweep killed with SIGKILL: `trials` and `studies` said "killed", while
    # optuna-dashboard (reading the storage, as it must) showed the trial Running, with nothing
    # to say it is not, until the next sweep fails it; so did the MLflow UI, its run RUNNING.
    from harness.cli import _serve
    from harness.sweep.storage import worker_host
    from harness.tracking.record import worker_attrs

    path = write_experiment(tmp_path, write_csv(tmp_path / "r.csv", review_rows(5)))
    experiment = load_experiment(str(path))
    handle = open_study(
        experiment, load_search_space(experiment.resolve_path(experiment.config.search_space))
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = handle.study.add_trial  # a RUNNING trial of a live worker stays unmentioned
    for pid in (dead.pid, os.getpid()):
        alive(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING,
                user_attrs=worker_attrs(worker_host(), pid),
            )
        )
    monkeypatch.setattr(_serve, "serve", lambda server, ready: ready())  # no server: its lines
    # The MLflow UI shows the trial's run RUNNING too, until the next sweep closes it KILLED.
    ensure_sqlite_store(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for args in (["dashboard", str(path)], ["dashboard"], ["ui"], ["ui", "--experiment", "tiny"]):
        result = run_cli(*args, "--port", str(free_port()))
        assert result.exit_code == 0, result.output
        assert "study tiny: trial 0 shows Running there, but its worker is gone" in result.stdout
        assert "trial 1" not in result.stdout, result.stdout

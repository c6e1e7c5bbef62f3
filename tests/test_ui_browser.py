"""`harness ui` and `harness dashboard` in a real browser: a tiny sweep, both servers started by
the real commands, and headless Chromium (driven over the DevTools protocol) rendering what
their printed links open:

- the MLflow UI's saved view: the trials only, sorted by validation accuracy, with their metric
  columns (values in full, costs included) and run names; its chart mode with accuracy-vs-cost
  scatter plots; one trial's page and its artifacts;
- optuna-dashboard's study page: the Pareto front plot of validation accuracy against cost and
  the hyperparameter importance.

Then `harness ui` is stopped with SIGTERM: quietly, and nothing is left listening. The pages and
screenshots are kept in `tests/artifacts/` and the test's tmp dir.

Chromium comes from Debian (`make browser`, which `make test` runs first). Without it the tests
try the same install, and skip only when that fails outside CI.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from harness.cli._serve import check_port
from harness.config import load_experiment
from harness.sweep.loop import run_sweep
from tests.conftest import ONE_EPOCH_SPACE, ROOT, review_rows, write_csv, write_experiment
from tests.services import free_port
from tests.test_sweep import RecordingView

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / "tests" / "artifacts"
INSTALL = (
    "command -v chromium >/dev/null || (apt-get update -qq && "
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)"
)
# Each server's process group kills itself after this, even if pytest dies.
SERVER_LIFETIME_S = 300
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
]
# Every cell of the runs table, by row index and column id, as the page shows it.
TABLE_CELLS = """(() => {
  const rows = {};
  for (const cell of document.querySelectorAll('.ag-row .ag-cell[col-id]')) {
    const index = cell.closest('.ag-row').getAttribute('row-index');
    (rows[index] = rows[index] || {})[cell.getAttribute('col-id')] = cell.innerText.trim();
  }
  return JSON.stringify(rows);
})()"""
# The data of every Plotly chart on the page: per chart, per trace, its x and y values.
PLOTS = """JSON.stringify([...document.querySelectorAll('.js-plotly-plot')].map(
  plot => (plot.data || []).map(trace => ({x: trace.x || [], y: trace.y || []}))
))"""
RUN_NAME = "attributes.`Run Name`"


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, installed like `make browser` does if it is missing."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["sh", "-c", INSTALL], capture_output=True, timeout=900, check=False)
        found = shutil.which("chromium")
    if found is None:
        reason = "chromium is not installed and `apt-get install chromium` failed (make browser)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started with start_new_session=True and everything it started."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone; make sure its children are too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return


@dataclass(frozen=True)
class Swept:
    """A project folder after a two-trial sweep."""

    folder: Path
    experiment: Path
    store: str
    storage: str


@dataclass(frozen=True)
class Served:
    """A `harness ui` or `harness dashboard` process, its address and its output."""

    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def link(self, label: str) -> str:
        """The link printed after `label:`."""
        found = re.search(re.escape(label) + r": (http://\S+)", self.log.read_text())
        assert found, f"no {label!r} link printed:\n{self.log.read_text()}"
        return found.group(1)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    folder = tmp_path_factory.mktemp("project")
    store = f"sqlite:///{folder}/mlruns/mlflow.db"
    storage = f"sqlite:///{folder}/mlruns/optuna.db"
    path = write_experiment(
        folder,
        write_csv(folder / "reviews.csv", review_rows(14)),
        space=ONE_EPOCH_SPACE,
        tracking={"uri": store},
        study={"n_trials": 2, "sampler": {"kind": "random"}, "storage": storage},
    )
    with pytest.MonkeyPatch.context() as patch:  # what the autouse `isolated` does per test
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TOKENIZERS_PARALLELISM", "false")
        outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 2, outcome.failures
    return Swept(folder, path, store, storage)


def _serve(swept: Swept, name: str, *args: str) -> Iterator[Served]:
    """`harness ARGS --port P` in the project folder, until it says it is up."""
    port, log = free_port(), swept.folder / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["HF_HUB_OFFLINE"] = "1"
    # sh keeps a sleeping watchdog in the process group, then becomes `harness` itself.
    watchdog = f'(sleep {SERVER_LIFETIME_S}; kill -TERM 0) & exec "$@"'
    command = ["sh", "-c", watchdog, "sh", sys.executable, "-m", "harness", *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=swept.folder,
            start_new_session=True,
        )
    try:
        served = Served(proc, f"http://127.0.0.1:{port}", log)
        _wait_until_up(served, "(Ctrl-C to stop)")
        yield served
    finally:
        _stop_group(proc)


@pytest.fixture(scope="module")
def ui_server(swept: Swept) -> Iterator[Served]:
    yield from _serve(swept, "ui", "ui")


@pytest.fixture(scope="module")
def dashboard_server(swept: Swept) -> Iterator[Served]:
    yield from _serve(swept, "dashboard", "dashboard", str(swept.experiment))


def _wait_until_up(served: Served, needle: str) -> None:
    """Until the command prints `needle`, which it does once its server answers."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            pytest.fail(f"exited with {served.proc.returncode}:\n{served.log.read_text()}")
        if needle in served.log.read_text():
            return
        time.sleep(0.5)
    pytest.fail(f"no {needle!r} within 240 s:\n{served.log.read_text()}")


class _Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe: stdlib only, no websocket.

    With `--remote-debugging-pipe` Chromium reads NUL-terminated JSON commands on fd 3 and writes
    replies and events on fd 4. The test can then wait until the React app has rendered what it
    checks, instead of guessing how long `--dump-dom` should wait.
    """

    def __init__(self, binary: str, profile: Path) -> None:
        self._to_chrome_read, self._to_chrome = os.pipe()
        self._from_chrome, self._from_chrome_write = os.pipe()
        fds = f"3<&{self._to_chrome_read} 4>&{self._from_chrome_write}"
        args = [binary, *CHROMIUM_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}"]
        self.proc = subprocess.Popen(
            # bash, not sh: dash cannot redirect file descriptors above 9.
            ["bash", "-c", f'exec "$@" {fds}', "bash", *args, "about:blank"],
            pass_fds=(self._to_chrome_read, self._from_chrome_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(self._to_chrome_read)
        os.close(self._from_chrome_write)
        self._buffer, self._next_id, self.session = b"", 0, ""

    def send(self, method: str, timeout: float = 60, **params: object) -> dict[str, object]:
        """One command (on the page's session once attached); returns its result."""
        self._next_id += 1
        message: dict[str, object] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:  # events and other replies are skipped
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                result: dict[str, object] = reply.get("result", {})  # type: ignore[assignment]
                return result

    def _receive(self, deadline: float) -> dict[str, object]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, object] = json.loads(raw)
        return message

    def open(self, url: str, width: int = 1600, height: int = 1000) -> None:
        target = self.send("Target.createTarget", url="about:blank")
        attached = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        self.session = str(attached["sessionId"])
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.navigate(url)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> object:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")  # type: ignore[attr-defined]

    def wait_for_text(self, needles: list[str], timeout: float) -> str:
        """The page's visible text once it holds every needle (or what it holds at the end).

        Whitespace is collapsed first: the UI separates words with newlines and no-break spaces.
        """
        deadline, text = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            raw = self.evaluate("document.body ? document.body.innerText : ''")
            text = re.sub(r"\s+", " ", str(raw or ""))
            if all(needle in text for needle in needles):
                break
            time.sleep(0.5)
        return text

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(str(data)))

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, EOFError, AssertionError):
            self.session = ""
            self.send("Browser.close", timeout=5)
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        _stop_group(self.proc)


def _keep(source: Path, name: str, tmp_path: Path) -> Path:
    """Copy a test artifact into tests/artifacts/ (never committed) and the pytest tmp dir."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Written by tests; never committed.\n*\n")
    shutil.copyfile(source, ARTIFACTS / name)
    if source.parent != tmp_path:
        shutil.copyfile(source, tmp_path / name)
    return ARTIFACTS / name


def _post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


Plot = list[dict[str, list[float]]]  # a chart's traces, each with its x and y values


def _plots(browser: _Browser, count: int, timeout: float = 60) -> list[Plot]:
    """The data of the page's Plotly charts, once there are `count` of them with data."""
    deadline, plots = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        plots = json.loads(str(browser.evaluate(PLOTS)))
        if len(plots) >= count and all(any(t["x"] for t in p) for p in plots[:count]):
            break
        time.sleep(0.5)
    return plots


def _points(plot: Plot) -> list[tuple[float, float]]:
    """Every (x, y) point of one chart, sorted."""
    return sorted((x, y) for trace in plot for x, y in zip(trace["x"], trace["y"], strict=True))


def _trials(store: str) -> list[Run]:
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_ui_opens_the_trials_sorted_by_validation_accuracy_with_metric_columns(
    chromium: str, ui_server: Served, swept: Swept, tmp_path: Path
) -> None:
    trials = _trials(swept.store)
    by_name = {r.info.run_name: r for r in trials}
    assert len(by_name) == 2 and all(re.match(r"t00\d ep=1 lr=", n) for n in by_name), by_name
    link = ui_server.link("tiny: trials sorted by validation accuracy")
    assert link.startswith(f"{ui_server.base}/#/experiments/") and "viewStateShareKey=" in link

    browser = _Browser(chromium, tmp_path / "profile")
    try:
        browser.open(link, width=3000)  # wide enough that no column is virtualised away
        needles = [*by_name, "valid_accuracy_final", "cost_usd", "Sort: valid_accuracy_final"]
        text = browser.wait_for_text(needles, timeout=120)
        rows = json.loads(str(browser.evaluate(TABLE_CELLS)))
        (tmp_path / "ui_trials_table.html").write_text(
            str(browser.evaluate("document.documentElement.outerHTML")), encoding="utf-8"
        )
        browser.screenshot(tmp_path / "ui_trials_table.png")
    finally:
        browser.close()
    _keep(tmp_path / "ui_trials_table.html", "ui_trials_table.html", tmp_path)
    _keep(tmp_path / "ui_trials_table.png", "ui_trials_table.png", tmp_path)

    for needle in needles:
        assert needle in text, f"{needle!r} not on the page: {text[:3000]}"
    assert "study tiny" not in text, "the study's parent run is filtered out"
    shown = [rows[i] for i in sorted(rows, key=int)]
    # The name cell starts with the run's colour (`#c82d4c`) on a line of its own.
    names = [row.get(RUN_NAME, "").splitlines()[-1] for row in shown]
    assert sorted(names) == sorted(by_name), f"full run names, trials only: {names}"
    accuracies = [by_name[n].data.metrics["valid_accuracy_final"] for n in names]
    assert accuracies == sorted(accuracies, reverse=True), "sorted by validation accuracy"
    for row, name in zip(shown, names, strict=True):
        metrics = by_name[name].data.metrics
        for key in ("valid_accuracy_final", "test_accuracy", "cost_usd"):
            cell = row.get(f"metrics.`{key}`")
            assert cell, f"no {key} column: {sorted(row)}"
            # Every digit MLflow has, not a rounded `0.00`: a cost of $0.00001 reads as such.
            assert float(cell) == pytest.approx(metrics[key], rel=1e-9), (key, cell)
        assert row.get("tags.`pareto`") in ("true", "false"), sorted(row)
        assert row.get("params.`learning_rate_multiplier`"), sorted(row)


def test_ui_charts_accuracy_against_cost(
    chromium: str, ui_server: Served, swept: Swept, tmp_path: Path
) -> None:
    trials = _trials(swept.store)
    link = ui_server.link("tiny: accuracy vs cost charts")
    browser = _Browser(chromium, tmp_path / "profile")
    try:
        browser.open(link)
        needles = ["Accuracy vs cost (4)", "cost_usd vs. valid_accuracy_final", "Parallel"]
        text = browser.wait_for_text([*needles, "Model metrics ("], timeout=120)
        plots = _plots(browser, 2)
        browser.screenshot(tmp_path / "ui_chart_view.png")
    finally:
        browser.close()
    _keep(tmp_path / "ui_chart_view.png", "ui_chart_view.png", tmp_path)

    for needle in needles:
        assert needle in text, f"{needle!r} not on the page: {text[:3000]}"
    for trial in trials:  # every trial listed by its full name beside the charts
        assert trial.info.run_name in text, trial.info.run_name
    assert plots, "no chart drawn"
    # The first chart is validation accuracy against cost, one point per trial.
    expected = sorted(
        (t.data.metrics["cost_usd"], t.data.metrics["valid_accuracy_final"]) for t in trials
    )
    assert _points(plots[0]) == expected, plots[0]


def test_ui_shows_a_trials_params_metrics_and_artifacts(
    chromium: str, ui_server: Served, swept: Swept, tmp_path: Path
) -> None:
    run = _trials(swept.store)[0]
    experiment_id = run.info.experiment_id
    # The server answers the UI's own API calls: the trials with metrics, and their artifacts.
    base = ui_server.base
    found = _post_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})
    served = {r["info"]["run_name"]: r["data"] for r in found["runs"]}  # type: ignore[index]
    assert {"test_accuracy", "cost_usd"} <= {m["key"] for m in served[run.info.run_name]["metrics"]}
    artifact = f"{base}/get-artifact?path=predictions.csv&run_uuid={run.info.run_id}"
    with urllib.request.urlopen(artifact, timeout=30) as response:
        assert response.read().decode().startswith("text,true,predicted,confidence")

    run_page = f"{base}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
    browser = _Browser(chromium, tmp_path / "profile")
    try:
        browser.open(run_page)
        run_text = browser.wait_for_text(
            [run.info.run_name, "learning_rate_multiplier", "test_accuracy", "cost_usd"], 60
        )
        browser.navigate(f"{run_page}/artifacts")
        files = browser.wait_for_text(["predictions.csv", "confusion_matrix.png"], timeout=60)
    finally:
        browser.close()
    for needle in ("learning_rate_multiplier", "batch_size", "test_accuracy", "cost_usd"):
        assert needle in run_text, f"{needle} not on the run page: {run_text[:2000]}"
    accuracy = f"{run.data.metrics['test_accuracy']:.3g}"[:4]
    assert accuracy in run_text, f"test accuracy {accuracy} not shown: {run_text[:2000]}"
    for needle in ("predictions.csv", "confusion_matrix.png", "classification_report.txt"):
        assert needle in files, f"{needle} not among the artifacts: {files[:2000]}"


def test_dashboard_shows_the_study_and_its_pareto_front(
    chromium: str, dashboard_server: Served, swept: Swept, tmp_path: Path
) -> None:
    study = optuna.load_study(study_name="tiny", storage=swept.storage)
    link = dashboard_server.link("study tiny: Pareto front, history, importance")
    assert link == f"{dashboard_server.base}/dashboard/studies/{study._study_id}"
    browser = _Browser(chromium, tmp_path / "profile")
    try:
        browser.open(link)
        needles = [
            "tiny",
            "Pareto Front",
            "valid_accuracy",
            "cost_usd",
            "Hyperparameter Importance",
        ]
        text = browser.wait_for_text(needles, timeout=120)
        plots = _plots(browser, 1)
        browser.screenshot(tmp_path / "dashboard_study.png")
    finally:
        browser.close()
    _keep(tmp_path / "dashboard_study.png", "dashboard_study.png", tmp_path)

    for needle in needles:
        assert needle in text, f"{needle!r} not on the page: {text[:3000]}"
    assert study.metric_names == ["valid_accuracy", "cost_usd"], "named by `harness dashboard`"
    assert plots, "no chart drawn"
    # The first plot is the Pareto front: every completed trial, at its (accuracy, cost).
    completed = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert _points(plots[0]) == sorted((t.values[0], t.values[1]) for t in completed), plots[0]


def test_ui_stops_on_sigterm_quietly_and_leaves_nothing_listening(ui_server: Served) -> None:
    """Last in this file: it stops the module's `harness ui`."""
    port = int(ui_server.base.rsplit(":", 1)[1])
    ui_server.proc.send_signal(signal.SIGTERM)  # the harness alone, as `kill PID` does
    assert ui_server.proc.wait(timeout=60) == 0
    with pytest.raises(OSError):  # connection refused: the server is gone
        urllib.request.urlopen(f"{ui_server.base}/health", timeout=5)
    check_port(port)  # free: the MLflow server is not listening
    log = ui_server.log.read_text()
    assert "Traceback" not in log and "Warning" not in log, log  # Starlette's is silenced
    assert log.rstrip().endswith("MLflow UI stopped."), log

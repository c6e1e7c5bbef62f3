"""`harness ui` in a real browser: a tiny sweep, the MLflow UI started by the real command, and
headless Chromium (driven over the DevTools protocol) rendering the experiment's chart view, one
trial's page and its artifacts. The pages must list the trials by their readable names, with
hyperparameters as params and accuracy and cost as metrics; the page and its screenshot are
kept in `tests/artifacts/` and the test's tmp dir.

Chromium comes from Debian (`make browser`, which `make test` runs first). Without it the test
tries the same install, and skips only when that fails outside CI.
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
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from harness.config import load_experiment
from harness.sweep.loop import run_sweep
from tests.conftest import ONE_EPOCH_SPACE, ROOT, review_rows, write_csv, write_experiment
from tests.test_sweep import RecordingView

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / "tests" / "artifacts"
INSTALL = (
    "command -v chromium >/dev/null || (apt-get update -qq && "
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)"
)
SERVER_LIFETIME_S = 300  # the UI's process group kills itself after this, even if pytest dies
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A swept store and `harness ui` serving it; yields (base URL, store URI, server log)."""
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    path = write_experiment(
        tmp_path,
        write_csv(tmp_path / "reviews.csv", review_rows(14)),
        space=ONE_EPOCH_SPACE,
        tracking={"uri": store},
    )
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 2, outcome.failures

    port, log = _free_port(), tmp_path / "ui.log"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store,
        # One web worker instead of four, and no background job runner (it serves GenAI
        # features only, with eight more processes): this is a 2-core machine.
        "MLFLOW_WORKERS": "1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    # sh keeps a sleeping watchdog in the process group, then becomes `harness ui` itself.
    watchdog = f'(sleep {SERVER_LIFETIME_S}; kill -TERM 0) & exec "$@"'
    command = ["sh", "-c", watchdog, "sh", sys.executable, "-m", "harness", "ui"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base, proc, log)
        yield base, store, log
    finally:
        _stop_group(proc)


def _wait_until_up(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"harness ui exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"harness ui did not answer within 180 s:\n{log.read_text()}")


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


def test_ui_lists_the_trials_and_their_metrics_in_the_chart_view(
    chromium: str, ui_server: tuple[str, str, Path], tmp_path: Path
) -> None:
    base, store, log = ui_server
    assert base in log.read_text(), "harness ui prints the URL it serves"
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    experiment_id = experiment.experiment_id
    trials = [r for r in client.search_runs([experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    names = sorted(r.info.run_name for r in trials)
    assert len(names) == 2 and all(re.match(r"t00\d ep=1 lr=", n) for n in names), names

    # The server answers the UI's own API calls: the trials with metrics, and their artifacts.
    found = _post_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})
    served = {r["info"]["run_name"]: r["data"] for r in found["runs"]}  # type: ignore[index]
    assert set(names) <= set(served)
    assert all(
        {"test_accuracy", "cost_usd"} <= {m["key"] for m in served[n]["metrics"]} for n in names
    )
    artifact = f"{base}/get-artifact?path=predictions.csv&run_uuid={trials[0].info.run_id}"
    with urllib.request.urlopen(artifact, timeout=30) as response:
        assert response.read().decode().startswith("text,true,predicted,confidence")

    # The chart view, sorted by test accuracy: sorting lists the trials flat instead of folded
    # under the study's parent run, so every trial is charted without clicking anything.
    page = (
        f"{base}/#/experiments/{experiment_id}/runs"
        "?orderByKey=metrics.%60test_accuracy%60&orderByAsc=false&compareRunsMode=CHART"
    )
    run = trials[0]
    run_page = f"{base}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
    browser = _Browser(chromium, tmp_path / "profile")
    try:
        browser.open(page)
        text = browser.wait_for_text([*names, "Model metrics (", "cost_usd"], timeout=120)
        dom = str(browser.evaluate("document.documentElement.outerHTML"))
        (tmp_path / "ui_chart_view.html").write_text(dom, encoding="utf-8")
        shot = tmp_path / "ui_chart_view.png"
        browser.screenshot(shot)
        # One trial's page: hyperparameters as params, accuracy and cost as metrics.
        browser.navigate(run_page)
        run_text = browser.wait_for_text(
            [run.info.run_name, "learning_rate_multiplier", "test_accuracy", "cost_usd"], 60
        )
        # Its artifacts, listed where the UI opens them.
        browser.navigate(f"{run_page}/artifacts")
        files = browser.wait_for_text(["predictions.csv", "confusion_matrix.png"], timeout=60)
    finally:
        browser.close()
    _keep(tmp_path / "ui_chart_view.html", "ui_chart_view.html", tmp_path)
    _keep(shot, shot.name, tmp_path)

    for name in names:
        assert name in text, f"trial {name!r} not on the page: {text[:2000]}"
    charts = re.search(r"Model metrics \((\d+)\)", text)
    assert charts is not None and int(charts.group(1)) >= 10, text[:2000]
    assert "cost_usd" in text, f"no cost_usd chart on the page: {text[:2000]}"
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert shot.stat().st_size > 20_000, "a blank page compresses to almost nothing"
    for needle in ("learning_rate_multiplier", "batch_size", "test_accuracy", "cost_usd"):
        assert needle in run_text, f"{needle} not on the run page: {run_text[:2000]}"
    accuracy = f"{run.data.metrics['test_accuracy']:.3g}"[:4]
    assert accuracy in run_text, f"test accuracy {accuracy} not shown: {run_text[:2000]}"
    for needle in ("predictions.csv", "confusion_matrix.png", "classification_report.txt"):
        assert needle in files, f"{needle} not among the artifacts: {files[:2000]}"

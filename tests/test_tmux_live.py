"""The live view in a real terminal: `harness sweep` runs in a tmux pane against the fake
OpenAI server, and the pane, read while the sweep runs, shows the budget (spent, reserved,
budget) and each epoch's validation accuracy.

Needs tmux (Debian's package: `make test` and `.ci/run` install it); skipped without it.
"""

# The fixture is imported by name, so every test that takes it "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import openai_experiment
from tests.openai_fake import FakeOpenAI, openai_fake  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]
HARNESS = Path(sys.executable).with_name("harness")
DONE = "MLflow parent run"  # the sweep's last line: printed after the live view is gone


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    """A tmux server of this test's own (its own socket), killed afterwards."""
    command = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, check=False)


def _pane(tmux: list[str]) -> str:
    return subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "sweep"], capture_output=True, text=True, check=True
    ).stdout


def test_live_view_in_a_terminal_shows_the_budget_and_every_epoch(
    tmp_path: Path, tmux: list[str], openai_fake: FakeOpenAI
) -> None:
    openai_fake.state.job_duration = 1.0  # long enough to read the pane while jobs run
    path = openai_experiment(tmp_path, "live", n_trials=2, budget_usd=5.0)
    env = {
        "OPENAI_API_KEY": "sk-harness-live-test-0123456789",
        "OPENAI_BASE_URL": openai_fake.base_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "HF_HUB_OFFLINE": "1",
        "TERM": "xterm-256color",
    }
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    # `; sleep`: the pane stays after the sweep so its last screen can be read too.
    command = f"env {exports} {HARNESS} sweep {path} --yes; sleep 60"
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "sweep", "-x", "100", "-y", "50", "-c", str(tmp_path)],
        check=True,
        env={**os.environ, "TMUX": ""},
    )
    subprocess.run([*tmux, "send-keys", "-t", "sweep", command, "Enter"], check=True)

    status = re.compile(r"\d/2 trials · ETA \S+ · spent \$\S+ · reserved \$\S+ · budget \$5\.00")
    epoch = re.compile(r"t\d{3} ep=\d lr=\S+ bs=8  epoch \d/\d  valid acc \d\.\d{4}  \$\S+ so far")
    seen_running: str | None = None
    deadline = time.monotonic() + 90  # about 35 s on 2 busy cores
    screen = ""
    while time.monotonic() < deadline:
        screen = _pane(tmux)
        if DONE in screen:
            break
        if status.search(screen) and epoch.search(screen):
            seen_running = screen  # both on screen while the sweep still ran
        time.sleep(0.2)
    assert seen_running is not None, f"never saw budget and epochs while running:\n{screen}"
    reserved = re.search(r"reserved \$(\S+)", seen_running)
    assert reserved is not None
    while DONE not in screen and time.monotonic() < deadline:
        time.sleep(0.5)
        screen = _pane(tmux)
    assert DONE in screen, screen
    # After the sweep: the last status (nothing reserved any more) and the trials' epochs.
    assert re.search(r"2/2 trials · spent \$\S+ · reserved \$0 · budget \$5\.00", screen), screen
    assert "epoch 1/" in screen and "synthetic" in screen

"""SIGTERM and SIGHUP stop a real `harness sweep` process as Ctrl-C does: the running trial is
settled (failed, its reservation counted as spent, nothing left `running`), its MLflow run and the
study's run are closed, and the process exits 128 + the signal's number (143, 129)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness.sweep.budget import ledger_usd
from tests.conftest import ROOT, review_rows, write_csv, write_experiment

pytestmark = pytest.mark.slow


def _running_trial(storage: str) -> bool:
    """A trial is training: RUNNING with its MLflow run open (before that, on a loaded machine
    a first local estimate can calibrate for seconds: an interrupt then is another test's)."""
    try:
        study = optuna.load_study(study_name="tiny", storage=storage)
    except KeyError:  # not created yet
        return False
    return any(
        t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
        for t in study.get_trials(deepcopy=False)
    )


@pytest.mark.parametrize(
    ("sig", "code", "reader_gone"),
    [
        (signal.SIGTERM, 143, False),
        (signal.SIGHUP, 129, False),
        # `harness sweep demo | tee log`, then Ctrl-C: the terminal's SIGINT ends `tee` too, so
        # the sweep's next line met a broken pipe, which stopped it before it queued the trial
        # again (found by walking a sweep; the resumed sweep drew new parameters instead).
        (signal.SIGINT, 130, True),
    ],
)
def test_a_signal_stops_a_sweep_as_ctrl_c_does(
    tmp_path: Path, sig: signal.Signals, code: int, reader_gone: bool
) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    store = f"sqlite:///{tmp_path}/mlflow.db"
    path = write_experiment(
        tmp_path,
        write_csv(tmp_path / "reviews.csv", review_rows(60)),
        # Long enough to be caught mid-training: 8 epochs of 72 rows.
        space={"n_epochs": 8, "learning_rate_multiplier": 2.0, "batch_size": 8},
        study={"n_trials": 1, "sampler": {"kind": "random"}, "storage": storage},
        tracking={"uri": store},
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "sweep", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not _running_trial(storage):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no trial started within 240 s"
            time.sleep(0.5)
        time.sleep(3)  # inside the training loop
        if reader_gone:
            assert proc.stdout is not None
            proc.stdout.close()
        proc.send_signal(sig)
        err = proc.communicate(timeout=120)[1] if not reader_gone else ""
        if reader_gone:
            assert proc.stderr is not None
            err = proc.stderr.read()
            proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    said = "interrupted:" if sig == signal.SIGINT else f"interrupted ({sig.name})"  # Ctrl-C's
    assert said in err and "Traceback" not in err and "BrokenPipeError" not in err, err

    study = optuna.load_study(study_name="tiny", storage=storage)
    trial, again = study.get_trials()
    assert trial.state == TrialState.FAIL
    # Queued again, so the next sweep runs it first (found in a real run: a SIGTERM'd local
    # trial was not, while a SIGKILL'd one was, and the resumed sweep drew new parameters).
    assert again.state == TrialState.WAITING and again.params == trial.params
    assert ledger_usd(study.get_trials())[1] == 0.0  # nothing left reserved as if running
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and {r.info.status for r in runs} <= {"KILLED", "FINISHED"}
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.info.end_time is not None

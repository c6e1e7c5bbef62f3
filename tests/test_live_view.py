"""The live sweep view: what it draws from the sweep's events, the ETA from the estimates, the
budget ledger split into spent and reserved, and a trial skipped for budget on a real sweep."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from harness.backends import load_backend
from harness.cli.console import RichView, _StatusLine
from harness.config import load_experiment
from harness.data.prepare import prepare_experiment
from harness.records import Cost, EpochResult, TrialResult, TrialSpec
from harness.sweep.budget import committed_usd, ledger_usd
from harness.sweep.estimate import corner_specs
from harness.sweep.live import SweepClock, SweepStatus
from harness.sweep.loop import run_sweep
from harness.sweep.search_space import load_search_space
from harness.sweep.study import open_study
from harness.tracking.record import (
    SKIPPED_REASON,
    STOPPED_TAG,
    reserve_attrs,
    settle_attrs,
    skipped_attrs,
)
from tests.cli_runner import run_cli
from tests.conftest import write_experiment
from tests.test_sweep import RecordingView

SPEC = TrialSpec(number=3, n_epochs=2, learning_rate_multiplier=1.8, batch_size=16, base_model="m")


def _console() -> Console:
    return Console(record=True, width=80, force_terminal=False, color_system=None)


def _epoch(n: int, accuracy: float, usd: float) -> EpochResult:
    return EpochResult(n, accuracy, 0.5, 0.6, Cost(usd=usd))


# --- what the view draws ----------------------------------------------------------------------


def test_view_prints_each_epoch_as_it_comes_and_the_skip_with_its_reason() -> None:
    console = _console()
    with RichView(console) as view:
        view.sweep_started("demo", 0, 8)
        view.trial_started(SPEC, Cost(usd=0.00123))
        view.trial_epoch(SPEC, _epoch(1, 0.75, 0.0005))
        after_one = console.export_text(clear=False)
        view.trial_epoch(SPEC, _epoch(2, 0.8125, 0.001))
        view.trial_skipped(SPEC, "budget: $0.0990 committed of $0.1000; this trial could ...")
        view.trial_skipped(None, "budget: the cheapest trial the space allows could ...")
    text = console.export_text()
    # The first epoch is on screen before the second exists: it is shown as it comes.
    assert "t003 ep=2 lr=1.8 bs=16  epoch 1/2  valid acc 0.7500  $0.0005 so far" in after_one
    assert "epoch 2/2" not in after_one
    assert "epoch 2/2  valid acc 0.8125  $0.001 so far" in text
    assert "t003 ep=2 lr=1.8 bs=16 skipped: budget: $0.0990 committed of $0.1000" in text
    assert "next trial skipped: budget: the cheapest trial" in text
    assert "failed" not in text.lower()
    assert all(len(line) <= 80 for line in text.splitlines())


def test_status_line_shows_money_and_the_eta_from_the_estimates() -> None:
    console = _console()
    with RichView(console) as view:
        view.sweep_started("demo", 2, 8)
        view.sweep_status(SweepStatus(2, 8, 1, 0.0123, 0.0045, 0.1, 754.0))
        console.print(*view.bars.get_renderables())
        sweep_task = view.bars.tasks[0]
        eta_cell = view.bars.columns[-1].render(sweep_task).plain  # type: ignore[attr-defined]
        assert sweep_task.completed == 2 and sweep_task.total == 8
        live = console.export_text()
        view.sweep_status(SweepStatus(3, 8, 0, 0.0170, 0.0, 0.1, None))
    final = console.export_text()
    status = next(line for line in live.splitlines() if "spent" in line)
    assert re.fullmatch(
        r"2/8 trials · ETA 0:12:3\d · spent \$0\.0123 · reserved \$0\.0045 · budget \$0\.10",
        status,
    ), status
    assert re.fullmatch(r"0:12:3\d", eta_cell), eta_cell  # the trials bar, not rich's -:--:--
    assert live.splitlines().index(status) < live.splitlines().index(
        next(line for line in live.splitlines() if line.startswith("trials"))
    )  # above the bars
    # The last status stays printed after the bars are gone, without an ETA.
    assert "3/8 trials · spent $0.017 · reserved $0 · budget $0.10" in final.splitlines()
    assert all(len(line) <= 80 for line in live.splitlines() + final.splitlines())


def test_status_line_without_a_budget_or_an_estimate() -> None:
    console = _console()
    with RichView(console) as view:
        view.sweep_started("demo", 0, 4)
        view.sweep_status(SweepStatus(0, 4, 2, 0.0, 0.5, None, None))
        console.print(*view.bars.get_renderables())
    assert "0/4 trials · ETA -:--:-- · spent $0 · reserved $0.50 · budget none" in (
        console.export_text()
    )


def test_a_finished_trial_line_keeps_its_curve_and_cost() -> None:
    console = _console()
    with RichView(console) as view:
        from harness.records import Metrics, TrainedModel

        model = TrainedModel("ref", (_epoch(1, 0.75, 0.0005), _epoch(2, 0.8125, 0.001)), Cost())
        metrics = Metrics(0.78, 0.77, 0.77, None, 16)
        view.trial_finished(TrialResult(SPEC, model, metrics, Cost(usd=0.0002), 12.0, ()))
    line = "t003 ep=2 lr=1.8 bs=16  valid [0.750 0.812]  test acc 0.7800  $0.0002  12s"
    assert line in console.export_text().splitlines()


# --- time left ------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_eta_from_estimated_seconds_learns_how_long_trials_really_take() -> None:
    clock = _Clock()
    eta = SweepClock(clock=clock)
    eta.started(0, Cost(usd=0.01, compute_seconds=100.0))
    # Before any trial finished, the estimate is taken at its word: this one plus 3 more alike.
    assert eta.seconds_left(done=0, target=4) == pytest.approx(400.0)
    clock.now = 40.0
    assert eta.seconds_left(done=0, target=4) == pytest.approx(360.0)
    clock.now = 150.0
    eta.finished(0, wall_seconds=150.0)  # took 1.5x its estimate (loading, saving, a busy CPU)
    eta.started(1, Cost(usd=0.02, compute_seconds=200.0))
    # Trial 1: 200 s x 1.5; the 2 not started: the mean estimate (150 s) x 1.5 each.
    assert eta.seconds_left(done=1, target=4) == pytest.approx(300.0 + 2 * 225.0)


def test_eta_is_unknown_not_zero_once_a_trial_takes_longer_than_expected() -> None:
    # Found by hand: on a busy machine the first trial took 50 s against its 6 s estimate, and
    # the status line read ETA 0:00:00 for the 44 s until it finished.
    clock = _Clock()
    eta = SweepClock(clock=clock)
    eta.started(0, Cost(usd=0.01, compute_seconds=6.0))
    clock.now = 5.0
    assert eta.seconds_left(done=0, target=2) == pytest.approx(7.0)
    clock.now = 20.0
    assert eta.seconds_left(done=0, target=2) is None
    line = _StatusLine()
    line.deadline = time.monotonic() - 1.0  # the countdown between updates ran out
    line.status = SweepStatus(0, 2, 1, 0.0, 0.0, None, None)
    assert line.seconds_left() is None
    assert "ETA -:--:--" in line.__rich__().plain  # type: ignore[union-attr]


def test_eta_for_a_backend_without_seconds_uses_the_trials_finished() -> None:
    clock = _Clock()
    eta = SweepClock(concurrency=2, clock=clock)
    eta.started(0, Cost(usd=0.5))
    eta.started(1, Cost(usd=0.5))
    assert eta.seconds_left(done=0, target=4) is None  # OpenAI: nothing to go on yet
    clock.now = 30.0
    eta.finished(0, wall_seconds=30.0)
    eta.dropped(1)  # failed: says nothing about speed
    # Three to go at 30 s each, two at a time.
    assert eta.seconds_left(done=1, target=4) == pytest.approx(45.0)


# --- the ledger -----------------------------------------------------------------------------


def test_ledger_splits_what_is_committed_into_spent_and_reserved() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def add(state: TrialState, attrs: dict[str, object]) -> None:
        values = [0.8, float(attrs.get("cost_usd", 0.0))] if state == TrialState.COMPLETE else None
        study.add_trial(
            optuna.trial.create_trial(
                state=state, params={"x": 0.5}, distributions=dist, values=values, user_attrs=attrs
            )
        )

    add(TrialState.COMPLETE, {**reserve_attrs(0.4), "cost_usd": 0.3})
    add(TrialState.FAIL, reserve_attrs(0.2))  # may have spent it: counts as spent
    add(TrialState.FAIL, {**reserve_attrs(0.2), **settle_attrs(0.0)})  # known to be $0
    add(TrialState.PRUNED, skipped_attrs("budget: ..."))  # skipped: nothing spent
    add(TrialState.RUNNING, reserve_attrs(0.25))
    trials = study.get_trials()
    spent, reserved = ledger_usd(trials)
    assert spent == pytest.approx(0.5) and reserved == pytest.approx(0.25)
    assert spent + reserved == pytest.approx(committed_usd(trials))


# --- a real sweep that runs out of budget ---------------------------------------------------


@pytest.mark.slow
def test_a_trial_the_budget_cannot_cover_is_skipped_with_its_reason_not_failed(
    tmp_path: Path, tiny_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1-epoch and a 2-epoch trial queued, and a budget for the first plus 1.2 times it: the
    2-epoch one drawn does not fit, so it is skipped (PRUNED with the reason, no MLflow run) and
    runs cut to 1 epoch, which fits; then not even the cheapest fits, and the sweep stops with
    the reason on the study's run and in the view; nothing failed."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    space = {
        "n_epochs": {"type": "int", "low": 1, "high": 2},
        "learning_rate_multiplier": {"type": "float", "low": 2.0, "high": 6.0},
        "batch_size": 8,
    }
    study = {"n_trials": 3, "sampler": {"kind": "random"}, "early_stopping": False}
    path = write_experiment(tmp_path, tiny_csv, space=space, study=study)
    experiment = load_experiment(str(path))
    loaded_space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    backend = load_backend(experiment.config.backend)
    data, _ = prepare_experiment(experiment)
    (low,) = corner_specs(experiment, loaded_space, dearest=False)
    (high,) = corner_specs(experiment, loaded_space)
    one, two = (backend.estimate(spec, data).total.usd for spec in (low, high))
    assert two > 1.5 * one
    config = yaml.safe_load(path.read_text())
    config["budget_usd"] = 2.2 * one
    path.write_text(yaml.safe_dump(config))
    experiment = load_experiment(str(path))
    handle = open_study(experiment, loaded_space)
    for epochs, lr in ((1, 3.0), (2, 4.0)):
        handle.study.enqueue_trial({"n_epochs": epochs, "learning_rate_multiplier": lr})

    console = _console()
    with RichView(console) as view:
        outcome = run_sweep(experiment, view, confirm=lambda worst, limit: True)
    shown = console.export_text()

    assert len(outcome.results) == 2 and outcome.failures == [] and not outcome.all_failed
    assert [(r.spec.n_epochs, r.spec.learning_rate_multiplier) for r in outcome.results] == [
        (1, 3.0),
        (1, 4.0),  # the 2-epoch draw, cut to what the budget still covered
    ]
    assert outcome.stopped is not None and outcome.stopped.startswith("budget:")
    trials = handle.study.get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.COMPLETE,
    ]
    assert "so it runs instead with n_epochs=1" in trials[1].user_attrs[SKIPPED_REASON]
    assert committed_usd(trials) <= config["budget_usd"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (exp,) = [e for e in client.search_experiments() if e.name == "tiny"]
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2  # the skipped trial has no run
    assert parent.data.tags[STOPPED_TAG] == outcome.stopped
    # The view: the trials that ran, the skip with its reason, the stop, the money.
    assert "t000 ep=1 lr=3 bs=8  epoch 1/1  valid acc" in shown
    assert "t001 ep=2 lr=4 bs=8 skipped: budget:" in shown
    assert f"next trial skipped: {outcome.stopped[:40]}" in shown
    assert "2/3 trials · spent $" in shown and "budget $" in shown
    # The trials table does not call it a failure.
    listed = run_cli("trials", str(path))
    assert listed.exit_code == 0 and "fail" not in listed.stdout.lower()
    assert "skipped" in listed.stdout
    as_json = run_cli("trials", str(path), "--json")
    skipped = [t for t in json.loads(as_json.stdout) if t["state"] == "skipped"]
    assert len(skipped) == 1 and "budget" in skipped[0]["failure_reason"]


def test_recording_view_is_still_a_sweep_view() -> None:
    """Views without the live events (tests, benchmarks) declare so, and are handed none."""
    from harness.sweep.live import live_view

    view = RecordingView()
    assert view.live is None
    live_view(view.live).trial_skipped(None, "budget")  # dropped, not an AttributeError
    rich = RichView(_console())
    assert rich.live is rich and live_view(rich.live) is rich

"""Inside one sweep: is tokenization reused across trials, and what share does MLflow take?

A 4-trial local sweep (400 training examples, one epoch: about the demo's smallest trial) runs
in this process. `LocalBackend._encode` (the cached dataset tokenization) and every public
`MlflowTracker` method are wrapped with timers by monkeypatching; nested tracker calls count
once (outermost only). Tracker time is split into what every trial pays (opening its run, epoch
metrics, closing it with its artifacts) and what a sweep pays once (opening the store, importing
MLflow, the study's run, tagging the front): the target is on the first, per trial.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import BenchResult, Figure, QuietView, local_experiment

TRACKER_METHODS = (
    "__init__",
    "start_study",
    "start_trial",
    "tag",
    "log_step_metrics",
    "log_text",
    "log_epoch",
    "finish_trial",
    "fail_trial",
    "mark_pareto",
    "finish_study",
)
SPACE = {
    "n_epochs": 1,
    "learning_rate_multiplier": {"type": "float", "low": 0.5, "high": 2.0, "log": True},
    "batch_size": 16,
    "train_examples": 400,
}
PER_TRIAL = ("start_trial", "tag", "log_step_metrics", "log_text", "log_epoch", "finish_trial")
N_TRIALS = 4


class _Timers:
    """Seconds per wrapped function; tracker time counted at the outermost call only."""

    def __init__(self) -> None:
        self.encode: list[float] = []
        self.tracker: dict[str, float] = {}
        self.depth = 0

    def wrap_tracker(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    spent = time.perf_counter() - began
                    self.tracker[name] = self.tracker.get(name, 0.0) + spent

        return timed

    def wrap_encode(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.encode.append(time.perf_counter() - began)

        return timed


def run() -> BenchResult:
    """Run the sweep with timers in place; report reuse and the tracker's share of wall time."""
    from harness.backends.local.encoder import LocalBackend
    from harness.config import load_experiment
    from harness.sweep.loop import run_sweep
    from harness.tracking.runs import MlflowTracker

    timers = _Timers()
    saved = {name: MlflowTracker.__dict__.get(name) for name in TRACKER_METHODS}
    saved_encode = LocalBackend._encode
    cwd = os.getcwd()
    try:
        for name in TRACKER_METHODS:
            setattr(MlflowTracker, name, timers.wrap_tracker(name, getattr(MlflowTracker, name)))
        LocalBackend._encode = timers.wrap_encode(saved_encode)  # type: ignore[method-assign]
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            os.chdir(tmp)
            path = local_experiment(Path(tmp) / "exp", SPACE, n_trials=N_TRIALS)
            view = QuietView()
            began = time.perf_counter()
            outcome = run_sweep(load_experiment(str(path)), view)
            total = time.perf_counter() - began
    finally:
        os.chdir(cwd)
        for name, fn in saved.items():
            if fn is None:
                delattr(MlflowTracker, name)
            else:
                setattr(MlflowTracker, name, fn)
        LocalBackend._encode = saved_encode  # type: ignore[method-assign]
    if view.failed or len(outcome.results) != N_TRIALS:
        raise RuntimeError(f"sweep failed: {view.failed}")
    first, later = timers.encode[0], max(timers.encode[1:])
    reuse = later / first
    per_trial_s = sum(v for k, v in timers.tracker.items() if k in PER_TRIAL)
    once_s = sum(v for k, v in timers.tracker.items() if k not in PER_TRIAL)
    trial_s = sum(r.wall_seconds for r in outcome.results)
    # A trial's wall_seconds covers training and test scoring; its MLflow calls come on top.
    share = per_trial_s / (trial_s + per_trial_s)
    figures = [
        Figure("tokenization later/first trial", reuse, "<= 0.05", reuse <= 0.05),
        Figure("first trial tokenization", first, "-", True, "s"),
        Figure("MLflow share of trial time", share, "< 0.01", share < 0.01),
        Figure("MLflow seconds per trial", per_trial_s / N_TRIALS, "-", True, "s"),
        Figure("MLflow seconds once per sweep", once_s, "-", True, "s"),
        Figure("mean trial wall", trial_s / N_TRIALS, "-", True, "s"),
    ]
    raw = {
        "encode_seconds_per_trial": timers.encode,
        "tracker_seconds_by_method": timers.tracker,
        "per_trial_methods": PER_TRIAL,
        "sweep_wall_s": total,
        "trial_wall_s_sum": trial_s,
        "train_examples": SPACE["train_examples"],
        "n_trials": N_TRIALS,
    }
    return BenchResult("sweep_overhead", figures, raw)

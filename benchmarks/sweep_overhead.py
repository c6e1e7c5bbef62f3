"""Inside one sweep: is tokenization reused across trials, and what share does MLflow take?

A 3-trial local sweep on small data runs in this process. `LocalBackend._encode` (the cached
dataset tokenization) and every public `MlflowTracker` method are wrapped with timers by
monkeypatching; nested tracker calls count once (outermost only).
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
    "train_examples": 100,
}


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
    from harness.backends.local import LocalBackend
    from harness.config import load_experiment
    from harness.sweep import run_sweep
    from harness.tracking import MlflowTracker

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
            path = local_experiment(Path(tmp) / "exp", SPACE, n_trials=3, max_rows=500)
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
    if view.failed or len(outcome.results) != 3:
        raise RuntimeError(f"sweep failed: {view.failed}")
    first, later = timers.encode[0], max(timers.encode[1:])
    reuse = later / first
    tracker_s = sum(timers.tracker.values())
    share = tracker_s / total
    trial_s = sum(r.wall_seconds for r in outcome.results)
    figures = [
        Figure("tokenization later/first trial", reuse, "<= 0.05", reuse <= 0.05),
        Figure("first trial tokenization", first, "-", True, "s"),
        Figure("MLflow share of sweep wall", share, "< 0.01", share < 0.01),
        Figure("MLflow seconds", tracker_s, "-", True, "s"),
    ]
    raw = {
        "encode_seconds_per_trial": timers.encode,
        "tracker_seconds_by_method": timers.tracker,
        "sweep_wall_s": total,
        "trial_wall_s_sum": trial_s,
        "tracker_share_of_trial_wall": tracker_s / trial_s,
        "train_examples": 100,
        "n_trials": 3,
    }
    return BenchResult("sweep_overhead", figures, raw)

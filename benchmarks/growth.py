"""How a local trial grows with the training set, and a sweep with its number of trials.

Trial: one harness trial (fresh interpreter, `run_sweep`) at 1x, 2x and 4x a base training-set
size over the same data (the validation and test sets stay fixed), as ratios to the 1x run.
Sweep: 1 trial against 3 trials of the same small configuration, seconds per trial.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import BenchResult, Figure, local_experiment, run_worker

BASE = 100
SCALES = (1, 2, 4)
SWEEP_EXAMPLES = 100


def _space(train_examples: int) -> dict[str, Any]:
    return {
        "n_epochs": 1,
        "learning_rate_multiplier": 1.0,
        "batch_size": 16,
        "train_examples": train_examples,
    }


def run() -> BenchResult:
    """Trial time / memory at 1x, 2x, 4x; sweep seconds per trial at 1 and 3 trials."""
    trials: dict[int, dict[str, Any]] = {}
    sweeps: dict[int, dict[str, Any]] = {}
    # 700 rows: ~480 training examples, enough for 4 x 100; validation and test ~70 / ~140.
    rows = {"max_rows": 700, "validation": 0.1, "test": 0.2}
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
        for scale in SCALES:
            path = local_experiment(Path(tmp) / f"x{scale}", _space(BASE * scale), **rows)
            trials[scale] = run_worker("harness", {"experiment": str(path), "n_trials": 1})
        sweeps[1] = trials[1]  # the same configuration: 1 trial of 100 examples
        path = local_experiment(Path(tmp) / "n3", _space(SWEEP_EXAMPLES), n_trials=3, **rows)
        sweeps[3] = run_worker("harness", {"experiment": str(path), "n_trials": 3})
    figures: list[Figure] = []
    for scale in SCALES[1:]:
        t = trials[scale]["wall_s"] / trials[1]["wall_s"]
        m = trials[scale]["peak_rss_mb"] / trials[1]["peak_rss_mb"]
        figures.append(Figure(f"trial time {scale}x/1x", t, f"<= {scale} (linear)", t <= scale))
        figures.append(Figure(f"peak RSS {scale}x/1x", m, "<= 1.2 (flat)", m <= 1.2))
    per_trial = (sweeps[3]["wall_s"] / 3) / sweeps[1]["wall_s"]
    figures.append(Figure("sweep s/trial 3 vs 1 trial", per_trial, "<= 1.0", per_trial <= 1.0))
    raw = {
        "base_train_examples": BASE,
        "trial_runs": {f"{s}x": trials[s] for s in SCALES},
        "sweep_runs": {f"{n}_trials": sweeps[n] for n in sweeps},
        "note": "wall_s: perf_counter around load_experiment + run_sweep in a fresh interpreter",
    }
    return BenchResult("growth", figures, raw)

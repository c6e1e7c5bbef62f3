"""One harness trial against a plain PyTorch loop and `transformers.Trainer` on the same work.

Each contender runs in its own fresh interpreter (so peak RSS is its own), repeats interleaved,
best of `REPEATS` kept. Same data (rotten_tomatoes via `prepare_experiment`: ~600 / 150 / 300),
max_length 64, 1 epoch, batch 16, learning rate 2e-4, AdamW with the same weight decay, warmup
and gradient clipping.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import BenchResult, Figure, local_experiment, run_worker

REPEATS = 3
SPACE = {"n_epochs": 1, "learning_rate_multiplier": 1.0, "batch_size": 16}
CONTENDERS = ("harness", "plain", "trainer")


def run() -> BenchResult:
    """Measure wall time and peak memory of the three contenders; ratios to the plain loop."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        for repeat in range(REPEATS):
            for kind in CONTENDERS:
                # A fresh folder per harness run: a new study, not a resumed one.
                path = local_experiment(Path(tmp) / f"{kind}-{repeat}", SPACE)
                args = {"experiment": str(path), "n_epochs": 1, "batch_size": 16, "seed": 0}
                runs[kind].append(run_worker(kind, args))
    best = {kind: min(r["wall_s"] for r in runs[kind]) for kind in CONTENDERS}
    peak = {kind: min(r["peak_rss_mb"] for r in runs[kind]) for kind in CONTENDERS}
    time_ratio = best["harness"] / best["plain"]
    mem_ratio = peak["harness"] / peak["plain"]
    trainer_ratio = best["harness"] / best["trainer"]
    trainer_mem = peak["harness"] / peak["trainer"]
    figures = [
        Figure("time harness/plain", time_ratio, "<= 1.05", time_ratio <= 1.05),
        Figure("peak RSS harness/plain", mem_ratio, "<= 1.2", mem_ratio <= 1.2),
        Figure(
            "time harness/Trainer",
            trainer_ratio,
            "informational (met: <= 1.0)",
            trainer_ratio <= 1.0,
        ),
        Figure(
            "peak RSS harness/Trainer",
            trainer_mem,
            "informational (met: <= 1.0)",
            trainer_mem <= 1.0,
        ),
    ]
    for kind in CONTENDERS:
        figures.append(Figure(f"{kind} wall (best of {REPEATS})", best[kind], "-", True, "s"))
    raw = {
        "repeats": REPEATS,
        "runs": runs,
        "best_wall_s": best,
        "min_peak_rss_mb": peak,
        "split_sizes": {k: runs["plain"][0][k] for k in ("n_train", "n_validation", "n_test")},
        "hyperparameters": {"n_epochs": 1, "batch_size": 16, "lr": 2e-4, "max_length": 64},
    }
    return BenchResult("trial_overhead", figures, raw)

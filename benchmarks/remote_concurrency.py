"""OpenAI-backend concurrency against the fake server in `tests.openai_fake` (synthetic figures).

Jobs: N trials whose jobs each take D seconds on the server, at most C in flight: ideal sweep
time ceil(N/C) x D; efficiency = ideal / measured. Evaluation: `OpenAIBackend.predict` on 200
texts against the bound eval_concurrency / (single-request latency, measured here). The fake
server adds no latency of its own and runs in this process, so both figures measure the
harness's scheduling on top of a local server, not OpenAI.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import BenchResult, Figure, QuietView

N_TRIALS = 8
CONCURRENCY = 4
JOB_SECONDS = 2.0
EVAL_CONCURRENCY = 8
EVAL_TEXTS = 200
KEY = "sk-harness-bench-0123456789"


@contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _experiment(folder: Path) -> Path:
    from tests.conftest import review_rows, write_csv

    csv = write_csv(folder / "reviews.csv", review_rows(40, seed=4))
    space = folder / "space.yaml"
    space.write_text("n_epochs: 1\nlearning_rate_multiplier: 1.0\nbatch_size: 8\n")
    config: dict[str, Any] = {
        "name": "bench-remote",
        "seed": 5,
        "dataset": {"source": str(csv), "split": {"validation": 0.2, "test": 0.2}},
        "backend": {
            "kind": "openai",
            "model": "gpt-4.1-nano-2025-04-14",
            "max_concurrency": CONCURRENCY,
            "eval_concurrency": EVAL_CONCURRENCY,
            "poll_interval": 0.05,
            "poll_max_interval": 0.1,
        },
        "search_space": str(space),
        "study": {
            "n_trials": N_TRIALS,
            "sampler": {"kind": "random"},
            "storage": f"sqlite:///{folder}/optuna.db",
        },
    }
    path = folder / "remote.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _eval_throughput(experiment: Any, model: str, labels: tuple[str, ...]) -> dict[str, float]:
    """Single-request latency (median of 20 one-text calls), then 200 texts at once."""
    from harness.backends.openai import OpenAIBackend

    backend = OpenAIBackend(experiment.config.backend)
    backend.labels = labels
    backend.predict(model, ["warm up the connection pool"])
    latencies = []
    for i in range(20):
        began = time.perf_counter()
        backend.predict(model, [f"single request number {i}, a fine film"])
        latencies.append(time.perf_counter() - began)
    latency = statistics.median(latencies)
    texts = [f"review {i}: {'a moving, well acted story' if i % 2 else 'dull'}" for i in range(200)]
    began = time.perf_counter()
    predictions, _ = backend.predict(model, texts)
    seconds = time.perf_counter() - began
    assert len(predictions) == EVAL_TEXTS
    return {"latency_s": latency, "batch_s": seconds, "per_s": EVAL_TEXTS / seconds}


def run() -> BenchResult:
    """Sweep N trials at concurrency C, then measure prediction throughput."""
    from harness.config import load_experiment
    from harness.sweep import prepare_experiment, run_sweep
    from tests.openai_fake import FakeOpenAI

    cwd = os.getcwd()
    with (
        tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp,
        FakeOpenAI(job_duration=JOB_SECONDS) as server,
        _env(
            OPENAI_API_KEY=KEY,
            OPENAI_BASE_URL=server.base_url,
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
        ),
    ):
        os.chdir(tmp)
        try:
            experiment = load_experiment(str(_experiment(Path(tmp))))
            view = QuietView()
            began = time.perf_counter()
            outcome = run_sweep(experiment, view)
            sweep_s = time.perf_counter() - began
            if view.failed or len(outcome.results) != N_TRIALS:
                raise RuntimeError(f"remote sweep failed: {view.failed}")
            data, _ = prepare_experiment(experiment)
            model = outcome.results[0].model.model_ref
            evaluation = _eval_throughput(experiment, model, data.labels)
        finally:
            os.chdir(cwd)
    ideal = math.ceil(N_TRIALS / CONCURRENCY) * JOB_SECONDS
    efficiency = ideal / sweep_s
    bound = EVAL_CONCURRENCY / evaluation["latency_s"]
    eval_ratio = evaluation["per_s"] / bound
    figures = [
        Figure(
            "job concurrency efficiency (synthetic)",
            efficiency,
            ">= 0.9",
            efficiency >= 0.9,
            note=f"ideal ceil({N_TRIALS}/{CONCURRENCY}) x {JOB_SECONDS}s = {ideal:.1f}s",
        ),
        Figure("sweep wall (synthetic)", sweep_s, "-", True, "s"),
        Figure(
            "eval throughput / bound (synthetic)",
            eval_ratio,
            ">= 0.9",
            eval_ratio >= 0.9,
            note="bound = eval_concurrency / measured single-request latency",
        ),
        Figure("eval predictions/s (synthetic)", evaluation["per_s"], "-", True, "1/s"),
    ]
    raw = {
        "n_trials": N_TRIALS,
        "max_concurrency": CONCURRENCY,
        "job_duration_s": JOB_SECONDS,
        "sweep_wall_s": sweep_s,
        "ideal_s": ideal,
        "eval_concurrency": EVAL_CONCURRENCY,
        "eval_texts": EVAL_TEXTS,
        "eval": evaluation,
        "eval_bound_per_s": bound,
        "server": "tests.openai_fake.FakeOpenAI in this process; adds no latency",
    }
    return BenchResult("remote_concurrency", figures, raw, synthetic=True)

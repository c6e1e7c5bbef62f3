"""OpenAI-backend concurrency against the fake server in `tests.openai_fake` (synthetic figures).

The server: `tests.openai_fake.serve.FakeOpenAIProcess`, the fake OpenAI API in a child process
on 127.0.0.1 (so its request handling, which validates every reply against OpenAI's OpenAPI
document, does not compete for this process's GIL with the harness's threads). Each fine-tuning
job takes JOB_SECONDS (60 s) of simulated time, and every request waits LATENCY_S (0.15 s)
before its reply is sent: the network round trip and model time of a real API, the waiting that
concurrency is meant to hide. The fake sleeps, so concurrent requests overlap their latency.

Jobs: a sweep of N_TRIALS (8) trials at `max_concurrency` C (4) on 80 labelled rows; each trial
is a fine-tuning job of D = JOB_SECONDS plus what `run_sweep` does around it, including the
evaluation of its checkpoint (16 validation texts) and of its test set (16 texts), all trials'
requests sharing one `eval_concurrency` (8). A `SweepView` records when the sweep starts each
trial and when it has finished recording it; the span from the first start to the last finish
is compared with the ideal ceil(N/C) x D: efficiency = ideal / span. Per-trial overhead =
(span - ideal) / waves, waves = ceil(N/C): what each trial adds on top of its job (data checks
and token counts, uploads, job creation, polling lag with poll_interval 0.1 s backing off to
0.25 s, evaluation, MLflow and Optuna records), every request paying LATENCY_S. Left out of the
span, as one-time setup: importing the `openai` SDK (done before the sweep) and what `run_sweep`
does before its first trial and after its last (the MLflow store, data preparation, the study);
the whole `run_sweep` wall time is in the raw section (`sweep_wall_s`), per-trial start and
finish times too (`trials`).

Evaluation: `OpenAIBackend.predict` on EVAL_TEXTS (200) texts at `eval_concurrency` (8), against
the bound eval_concurrency / single-request latency, that latency being the median of 20
one-text `predict` calls measured in the same run against the same server (so it holds
LATENCY_S plus the real per-request cost of client and server).

Both figures measure the harness's scheduling against a local stand-in with simulated
durations, never OpenAI.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import BenchResult, Figure, QuietView
from harness.records import Cost, TrialResult, TrialSpec

N_TRIALS = 8
CONCURRENCY = 4
# Simulated fine-tuning job. Real ones take 10 minutes and more; a minute keeps the benchmark
# short while a trial's fixed overhead (reported on its own below) stays a small share of it.
JOB_SECONDS = 60.0
LATENCY_S = 0.15  # simulated wait before every reply of the fake (network + model time)
POLL_INTERVAL_S = 0.1  # first wait between job polls, backing off (x1.5) to POLL_MAX_INTERVAL_S
POLL_MAX_INTERVAL_S = 0.25
EVAL_CONCURRENCY = 8
EVAL_TEXTS = 200
LATENCY_SAMPLES = 20
KEY = "sk-harness-bench-0123456789"


class SpanView(QuietView):
    """A quiet SweepView that notes when each trial starts and when its result is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[int, float] = {}
        self.finished: dict[int, float] = {}
        self._lock = threading.Lock()

    def trial_started(self, spec: TrialSpec, estimate: Cost) -> None:
        """Noted (perf_counter)."""
        with self._lock:
            self.started[spec.number] = time.perf_counter()

    def trial_finished(self, result: TrialResult) -> None:
        """Noted (perf_counter)."""
        with self._lock:
            self.finished[result.spec.number] = time.perf_counter()


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
            "poll_interval": POLL_INTERVAL_S,
            "poll_max_interval": POLL_MAX_INTERVAL_S,
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


def _eval_throughput(experiment: Any, model: str, labels: tuple[str, ...]) -> dict[str, Any]:
    """Single-request latency (median of one-text calls), then EVAL_TEXTS texts at once."""
    from harness.backends.openai.backend import OpenAIBackend

    backend = OpenAIBackend(experiment.config.backend)
    backend.predict(model, ["warm up the connection pool"], labels)
    latencies = []
    for i in range(LATENCY_SAMPLES):
        began = time.perf_counter()
        backend.predict(model, [f"single request number {i}, a fine film"], labels)
        latencies.append(time.perf_counter() - began)
    latency = statistics.median(latencies)
    texts = [
        f"review {i}: {'a moving, well acted story' if i % 2 else 'dull'}"
        for i in range(EVAL_TEXTS)
    ]
    began = time.perf_counter()
    predictions, _ = backend.predict(model, texts, labels)
    seconds = time.perf_counter() - began
    assert len(predictions) == EVAL_TEXTS
    return {
        "latency_s": latency,
        "latency_min_s": min(latencies),
        "latency_max_s": max(latencies),
        "batch_s": seconds,
        "per_s": EVAL_TEXTS / seconds,
    }


def run() -> BenchResult:
    """Sweep N trials at concurrency C, then measure prediction throughput."""
    import openai  # noqa: F401 - a one-time import (~1 s) that would otherwise land in wave 1

    from harness.config import load_experiment
    from harness.data.prepare import prepare_experiment
    from harness.sweep.loop import run_sweep
    from tests.openai_fake.serve import FakeOpenAIProcess

    cwd = os.getcwd()
    server = FakeOpenAIProcess(
        job_duration=JOB_SECONDS, latency=LATENCY_S, api_key=KEY, idle_timeout=300.0
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp,
        server,
        _env(
            OPENAI_API_KEY=KEY,
            OPENAI_BASE_URL=server.base_url,
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
        ),
    ):
        os.chdir(tmp)
        try:
            experiment = load_experiment(str(_experiment(Path(tmp))))
            view = SpanView()
            began = time.perf_counter()
            outcome = run_sweep(experiment, view)
            sweep_s = time.perf_counter() - began
            if view.failed or len(outcome.results) != N_TRIALS or len(view.finished) != N_TRIALS:
                raise RuntimeError(f"remote sweep failed: {view.failed}")
            data, _ = prepare_experiment(experiment)
            model = outcome.results[0].model.model_ref
            evaluation = _eval_throughput(experiment, model, data.labels)
        finally:
            os.chdir(cwd)
    # Leaving the block stopped the server and raised if any of its replies broke the spec.
    first_start = min(view.started.values())
    span = max(view.finished.values()) - first_start
    waves = math.ceil(N_TRIALS / CONCURRENCY)
    ideal = waves * JOB_SECONDS
    efficiency = ideal / span
    overhead = (span - ideal) / waves
    bound = EVAL_CONCURRENCY / evaluation["latency_s"]
    eval_ratio = evaluation["per_s"] / bound
    figures = [
        Figure(
            "job concurrency efficiency (synthetic)",
            efficiency,
            ">= 0.9",
            efficiency >= 0.9,
            note=(
                f"ideal ceil({N_TRIALS}/{CONCURRENCY}) x {JOB_SECONDS:g}s = {ideal:.1f}s over the "
                f"span first trial start -> last trial finish ({span:.1f}s); request latency "
                f"{LATENCY_S:g}s"
            ),
        ),
        Figure(
            "per-trial overhead (synthetic)",
            overhead,
            "-",
            True,
            "s",
            note=f"(span - ideal) / {waves} waves: what a trial adds to its {JOB_SECONDS:g}s job",
        ),
        Figure("trial span (synthetic)", span, "-", True, "s"),
        Figure(
            "eval throughput / bound (synthetic)",
            eval_ratio,
            ">= 0.9",
            eval_ratio >= 0.9,
            note=(
                f"bound = eval_concurrency {EVAL_CONCURRENCY} / measured single-request latency "
                f"{evaluation['latency_s']:.3f}s (simulated {LATENCY_S:g}s)"
            ),
        ),
        Figure("eval predictions/s (synthetic)", evaluation["per_s"], "-", True, "1/s"),
    ]
    trials = {
        number: {
            "started_s": view.started[number] - first_start,
            "finished_s": view.finished[number] - first_start,
            "duration_s": view.finished[number] - view.started[number],
        }
        for number in sorted(view.finished)
    }
    raw = {
        "n_trials": N_TRIALS,
        "max_concurrency": CONCURRENCY,
        "job_duration_s": JOB_SECONDS,
        "request_latency_s": LATENCY_S,
        "poll_interval_s": [POLL_INTERVAL_S, POLL_MAX_INTERVAL_S],
        "waves": waves,
        "ideal_s": ideal,
        "span_s": span,
        "per_trial_overhead_s": overhead,
        "sweep_wall_s": sweep_s,
        "setup_and_teardown_s": sweep_s - span,
        "trials": trials,
        "eval_concurrency": EVAL_CONCURRENCY,
        "eval_texts": EVAL_TEXTS,
        "eval_latency_samples": LATENCY_SAMPLES,
        "eval": evaluation,
        "eval_bound_per_s": bound,
        "server": (
            "tests.openai_fake.serve.FakeOpenAIProcess: the fake in a child process on "
            f"127.0.0.1, replies validated against the OpenAPI spec, {LATENCY_S:g}s simulated "
            "latency per request"
        ),
        "server_summary": server.summary,
    }
    return BenchResult("remote_concurrency", figures, raw, synthetic=True)

"""What every benchmark shares: figures, the machine description, JSON output, subprocesses."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.backends.base import NullProgress
from harness.records import Cost, TrialResult, TrialSpec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measured number with its target; `met` says whether the target holds."""

    name: str
    value: float
    target: str
    met: bool
    unit: str = "ratio"
    note: str = ""


@dataclass
class BenchResult:
    """A benchmark's figures plus the raw measurements they were computed from."""

    benchmark: str
    figures: list[Figure]
    raw: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = False


class QuietView:
    """A SweepView that shows nothing (benchmarks time the sweep, not the terminal)."""

    def __init__(self) -> None:
        self.progress = NullProgress()
        self.live = None  # no live events (`SweepView.live`)
        self.failed: list[tuple[TrialSpec, str]] = []

    def sweep_started(self, study_name: str, done: int, target: int) -> None:
        """Ignored."""

    def trial_started(self, spec: TrialSpec, estimate: Cost) -> None:
        """Ignored."""

    def trial_finished(self, result: TrialResult) -> None:
        """Ignored."""

    def trial_failed(self, spec: TrialSpec, reason: str) -> None:
        """Remembered, so a benchmark can refuse to report a broken run."""
        self.failed.append((spec, reason))

    def message(self, text: str) -> None:
        """Ignored."""


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and torch versions, and the date of the run."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    import torch
    import transformers

    return {
        "cores": cores,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_result(result: BenchResult, info: dict[str, Any]) -> Path:
    """Write `results/<benchmark>.json`: the figures, the raw numbers and the machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{result.benchmark}.json"
    payload = {
        "benchmark": result.benchmark,
        "synthetic": result.synthetic,
        "machine": info,
        "figures": [asdict(f) for f in result.figures],
        "raw": result.raw,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def run_worker(kind: str, args: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Run `benchmarks.worker` in a fresh interpreter; its last stdout line is a JSON result."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", kind, json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def local_experiment(
    folder: Path,
    space: dict[str, Any],
    n_trials: int = 1,
    max_rows: int = 1050,
    validation: float = 0.143,
    test: float = 0.286,
    learning_rate: float = 2e-4,
    max_length: int = 64,
) -> Path:
    """A local-backend experiment on the bundled rotten_tomatoes, every store inside `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    space_file = folder / "space.yaml"
    space_file.write_text(yaml.safe_dump(space))
    config = {
        "name": "bench",
        "seed": 13,
        "dataset": {
            "source": "rotten_tomatoes",
            "labels": ["fresh", "rotten"],
            "max_rows": max_rows,
            "split": {"validation": validation, "test": test},
        },
        "backend": {
            "kind": "local",
            "model": "all-MiniLM-L6-v2",
            "base_learning_rate": learning_rate,
            "max_length": max_length,
            "models_dir": str(folder / "models"),
        },
        "search_space": str(space_file),
        "study": {
            "n_trials": n_trials,
            "sampler": {"kind": "random"},
            "storage": f"sqlite:///{folder}/optuna.db",
        },
        "tracking": {"uri": f"sqlite:///{folder}/mlflow.db"},
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path

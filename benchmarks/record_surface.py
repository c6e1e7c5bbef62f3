"""The response surface `search_efficiency` replays: `python -m benchmarks.record_surface`.

Every configuration of a grid over the demo's search space is trained once with the harness's own
local backend (its loop, optimizer, schedule, padding and tokenization cache), on the demo's data
(`experiments/demo.yaml`). After every epoch the model is scored on the validation split (as in a
trial) and on the test split (what the model would score if the trial stopped there), and the
seconds of each part are kept, so a replay can price a trial stopped after any epoch:

    seconds(stopped after epoch k) = load + sum(train_valid[:k]) + save + test[k]

Cost is those seconds times the backend's `dollars_per_hour`, as in a real trial. Configurations
run in a seeded random order so that any slowdown of the machine is not tied to one corner of the
grid. Rows are appended to a JSON-lines file as they finish, so an interrupted recording resumes;
`--finish` writes `benchmarks/data/response_surface.json` with how it was measured.

Timings are only as clean as the machine was idle. `--rerecord-slow` trains again every row whose
seconds per epoch are more than 15% above the median of rows with the same batch size and
training-set size (the learning rate and the number of epochs do not change the speed of an
epoch), and keeps whichever of the two runs was faster. Training is seeded and deterministic on
the CPU, so the accuracies of both runs are the same; the rows that were re-recorded are listed
in the surface file (`rerecorded`).

Recording the full grid took about an hour on 2 CPU cores (plus 10 minutes re-recording slow
rows); it is run once, by hand, not by `make bench`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRID: dict[str, list[Any]] = {
    "n_epochs": [1, 2, 3],
    "learning_rate_multiplier": [0.5, 1.0, 2.0, 4.0],
    "batch_size": [16, 32],
    "train_examples": [200, 400, 800],
}
DATA = Path(__file__).resolve().parent / "data"
EXPERIMENT = str(Path(__file__).resolve().parent.parent / "experiments" / "demo.yaml")


@dataclass(frozen=True)
class Target:
    """Which surface is recorded: the experiment (with `--set` overrides), the file it goes to,
    and the clock its seconds are read from."""

    experiment: str = EXPERIMENT
    overrides: tuple[str, ...] = ()
    name: str = "response_surface"
    cpu_clock: bool = False  # seconds = process CPU seconds / torch threads (load cannot move it)
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # values replacing GRID's for some keys

    @property
    def values(self) -> dict[str, list[Any]]:
        """The grid this surface covers: `GRID`, with this target's replacements."""
        return {**GRID, **{k: list(v) for k, v in self.grid}}

    @property
    def partial(self) -> Path:
        return DATA / f"{self.name}.partial.jsonl"

    @property
    def surface(self) -> Path:
        return DATA / f"{self.name}.json"

    def load(self) -> Any:
        from harness.config import load_experiment

        return load_experiment(self.experiment, list(self.overrides))

    def clock(self) -> Callable[[], float]:
        if not self.cpu_clock:
            return time.perf_counter
        import torch

        threads = max(1, torch.get_num_threads())
        return lambda: time.process_time() / threads


def grid_configs(grid: dict[str, list[Any]] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Every configuration of `grid` (default `GRID`), in a seeded random order."""
    grid = grid or GRID
    keys = list(grid)
    configs = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    random.Random(seed).shuffle(configs)
    return configs


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def record_one(
    backend: Any,
    data: Any,
    config: dict[str, Any],
    number: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Train one configuration with the local backend's own loop; score every epoch."""
    import torch

    from harness.backends.local._torch_utils import ordered_logits, quiet_transformers
    from harness.backends.local._training import label_ids, start_run, train_epoch, validate
    from harness.backends.local.encoder import resolve_model_path
    from harness.records import TrialSpec

    spec = TrialSpec(
        number=number,
        n_epochs=config["n_epochs"],
        learning_rate_multiplier=config["learning_rate_multiplier"],
        batch_size=config["batch_size"],
        base_model=backend.config.model,
        train_examples=config["train_examples"],
        seed=0,
    )
    started = clock()
    path = resolve_model_path(spec.base_model)
    tokenizer = backend._tokenizer(path, spec.base_model)
    encoded = backend._encode(path, tokenizer, data)
    run = start_run(backend.config, backend.device, spec, data, path, tokenizer, encoded.train)
    load_seconds = clock() - started
    valid_labels = torch.tensor(label_ids(data.validation, data.labels))
    test_ids = backend._token_ids(tokenizer, data.test.texts)
    test_labels = torch.tensor(label_ids(data.test, data.labels))
    epochs = []
    for epoch in range(1, spec.n_epochs + 1):
        began = clock()
        train_loss = train_epoch(run, backend.progress, f"{spec.run_name()} epoch {epoch}")
        batch = backend.config.eval_batch_size
        valid_accuracy, valid_loss, _ = validate(run, encoded.validation, valid_labels, batch)
        trained = clock()
        logits = ordered_logits(
            run.model, test_ids, backend.config.eval_batch_size, run.pad, backend.device
        )
        test_accuracy = (logits.argmax(dim=-1) == test_labels).float().mean().item()
        epochs.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "valid_accuracy": valid_accuracy,
                "test_accuracy": test_accuracy,
                "train_valid_seconds": trained - began,
                "test_seconds": clock() - trained,
            }
        )
    with tempfile.TemporaryDirectory() as tmp, quiet_transformers():
        began = clock()
        run.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_seconds = clock() - began
    return {
        "config": config,
        "load_seconds": load_seconds,
        "save_seconds": save_seconds,
        "epochs": epochs,
    }


def _done(target: Target) -> dict[str, dict[str, Any]]:
    if not target.partial.is_file():
        return {}
    lines = target.partial.read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return {_key(row["config"]): row for row in rows}


def _backend_and_data(target: Target) -> tuple[Any, Any]:
    from benchmarks.common import QuietView
    from harness.backends.local.encoder import LocalBackend
    from harness.data.prepare import prepare_experiment

    experiment = target.load()
    data, _ = prepare_experiment(experiment)
    return LocalBackend(experiment.config.backend, QuietView().progress), data


def record(target: Target, limit: int | None) -> None:
    """Record the configurations not yet in the partial file (at most `limit` of them)."""
    backend, data = _backend_and_data(target)
    done = _done(target)
    todo = [c for c in grid_configs(target.values) if _key(c) not in done][:limit]
    DATA.mkdir(parents=True, exist_ok=True)
    for i, config in enumerate(todo, start=len(done)):
        row = record_one(backend, data, config, i, target.clock())
        with target.partial.open("a") as out:
            out.write(json.dumps(row) + "\n")
        last = row["epochs"][-1]
        print(
            f"{i + 1}/{len(grid_configs(target.values))} {config} test={last['test_accuracy']:.3f}",
            flush=True,
        )


def _epoch_seconds(row: dict[str, Any]) -> float:
    return statistics.mean(e["train_valid_seconds"] for e in row["epochs"])


def _total_seconds(row: dict[str, Any]) -> float:
    epochs = row["epochs"]
    return row["load_seconds"] + sum(e["train_valid_seconds"] + e["test_seconds"] for e in epochs)


def slow_rows(rows: list[dict[str, Any]], tolerance: float = 1.15) -> list[dict[str, Any]]:
    """Rows whose epochs ran more than `tolerance` x slower than their group's median."""
    groups: dict[tuple[int, int], list[float]] = {}
    for row in rows:
        key = (row["config"]["batch_size"], row["config"]["train_examples"])
        groups.setdefault(key, []).append(_epoch_seconds(row))
    medians = {key: statistics.median(values) for key, values in groups.items()}
    return [
        row
        for row in rows
        if _epoch_seconds(row)
        > tolerance * medians[(row["config"]["batch_size"], row["config"]["train_examples"])]
    ]


def rerecord_slow(target: Target) -> None:
    """Train the slow rows again; keep the faster run of each (see the module docstring)."""
    backend, data = _backend_and_data(target)
    rows = _done(target)
    slow = slow_rows(list(rows.values()))
    print(f"re-recording {len(slow)} slow rows", flush=True)
    for i, old in enumerate(slow):
        new = record_one(backend, data, old["config"], i, target.clock())
        same = [e["test_accuracy"] for e in new["epochs"]] == [
            e["test_accuracy"] for e in old["epochs"]
        ]
        kept = new if _total_seconds(new) < _total_seconds(old) else old
        kept = {**kept, "rerecorded": True, "same_accuracy_when_rerecorded": same}
        rows[_key(old["config"])] = kept
        print(
            f"{old['config']}: {_total_seconds(old):.1f}s -> {_total_seconds(new):.1f}s", flush=True
        )
    target.partial.write_text("".join(json.dumps(row) + "\n" for row in rows.values()))


def finish(target: Target) -> None:
    """Write the surface file: every grid row, the data and backend it came from, the machine."""
    from benchmarks.common import machine
    from harness.data.prepare import prepare_experiment

    experiment = target.load()
    data, _ = prepare_experiment(experiment)
    rows = _done(target)
    missing = [c for c in grid_configs(target.values) if _key(c) not in rows]
    if missing:
        raise SystemExit(f"{len(missing)} grid configurations are not recorded yet")
    backend = experiment.config.backend
    surface = {
        "how": __doc__,
        "experiment": str(Path(target.experiment).resolve().relative_to(DATA.parents[1])),
        "overrides": list(target.overrides),
        "clock": "process CPU seconds / torch threads" if target.cpu_clock else "wall seconds",
        "data_digest": data.digest,
        "split_sizes": {
            "train": len(data.train),
            "validation": len(data.validation),
            "test": len(data.test),
        },
        "backend": backend.model_dump(),
        "dollars_per_hour": backend.dollars_per_hour,
        "grid": target.values,
        "machine": machine(),
        "rows": [rows[_key(c)] for c in grid_configs(target.values)],
        "rerecorded": [r["config"] for r in rows.values() if r.get("rerecorded")],
    }
    target.surface.write_text(json.dumps(surface, indent=1) + "\n")
    print(f"wrote {target.surface} ({len(rows)} configurations)")


def main() -> None:
    """Record (resumable), then write the surface file when the grid is complete."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="record at most this many")
    parser.add_argument("--finish", action="store_true", help="only write the surface file")
    parser.add_argument(
        "--rerecord-slow", action="store_true", help="train slow rows again, keep the faster run"
    )
    parser.add_argument("--experiment", default=EXPERIMENT, help="the experiment file to record")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE override")
    parser.add_argument("--name", default="response_surface", help="file name under data/")
    parser.add_argument(
        "--cpu-clock", action="store_true", help="time by process CPU seconds / torch threads"
    )
    parser.add_argument(
        "--grid", action="append", default=[], help="KEY=V1,V2 replaces GRID's values for KEY"
    )
    args = parser.parse_args()
    grid = tuple(
        (k, tuple(json.loads(f"[{v}]"))) for k, _, v in (g.partition("=") for g in args.grid)
    )
    target = Target(args.experiment, tuple(args.set), args.name, args.cpu_clock, grid)
    if args.rerecord_slow:
        rerecord_slow(target)
    elif not args.finish:
        record(target, args.limit)
    if len(_done(target)) == len(grid_configs(target.values)):
        finish(target)


if __name__ == "__main__":
    main()

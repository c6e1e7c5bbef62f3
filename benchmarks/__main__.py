"""`python -m benchmarks [NAME...]`: run all benchmarks (or the named ones), print a table of
figures against their targets, and write `benchmarks/results/<name>.json` for each."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from benchmarks import (
    compute,
    growth,
    lm_trial,
    remote_concurrency,
    search_efficiency,
    sweep_overhead,
    trial_overhead,
)
from benchmarks.common import BenchResult, Figure, machine, write_result

BENCHMARKS: dict[str, Callable[[], BenchResult]] = {
    "trial_overhead": trial_overhead.run,
    "sweep_overhead": sweep_overhead.run,
    "remote_concurrency": remote_concurrency.run,
    "growth": growth.run,
    "search_efficiency": search_efficiency.run,
    "lm_trial": lm_trial.run,
    "compute": compute.run,
}


def _row(benchmark: str, figure: Figure) -> str:
    value = f"{figure.value:.3f}" if figure.unit == "ratio" else f"{figure.value:.2f} {figure.unit}"
    verdict = "-" if figure.target == "-" else ("met" if figure.met else "NOT MET")
    row = f"{benchmark:<20} {figure.name:<40} {value:>12} {figure.target:<28} {verdict}"
    return f"{row} ({figure.note})" if verdict == "NOT MET" and figure.note else row


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; exit status 0 even when a target is missed (they are figures,
    not tests), 1 when a benchmark could not run, 2 for an unknown benchmark name."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    info = machine()
    print(
        f"machine: {info['cores']} cores, {info['cpu_model']}, torch {info['torch']}, "
        f"{info['date']}",
        flush=True,
    )
    results: list[BenchResult] = []
    failed: list[str] = []
    for name in args.names or list(BENCHMARKS):
        began = time.perf_counter()
        print(f"running {name} ...", flush=True)
        try:
            result = BENCHMARKS[name]()
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
            continue
        path = write_result(result, info)
        print(f"  done in {time.perf_counter() - began:.0f}s -> {path}", flush=True)
        results.append(result)
    print()
    header = f"{'benchmark':<20} {'figure':<40} {'value':>12} {'target':<28} met"
    print(header)
    print("-" * len(header))
    for result in results:
        for figure in result.figures:
            print(_row(result.benchmark, figure))
    if failed:
        print(f"\nfailed (no figures, no JSON written): {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The Pareto front of (accuracy, cost) pairs, kept by the study, the report and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(values: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (accuracy, cost) pairs no other pair beats on both, cheapest first.

    A pair is dominated when another is at least as accurate and at most as costly, and strictly
    better on one of the two; equal pairs are both kept, as Optuna does.
    """

    def dominated(i: int) -> bool:
        acc, cost = values[i]
        return any(
            a >= acc and c <= cost and (a > acc or c < cost)
            for j, (a, c) in enumerate(values)
            if j != i
        )

    keep = [i for i in range(len(values)) if not dominated(i)]
    return sorted(keep, key=lambda i: (values[i][1], -values[i][0]))

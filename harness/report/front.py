"""The Pareto front of accuracy against cost, the steps along it, and the recommendation.

A step up the front (to the next dearer configuration) is priced (gain, cost ratio, dollars per
accuracy point) and tested on the same test examples; the recommendation climbs the front only
while each paid-for gain is real and, given a value per point or a budget, worth it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from harness.report.formats import p_text, percent, points, usd
from harness.report.model import Recommendation, ReportOptions, Step, TrialRow
from harness.report.significance import PairedComparison, compare_paired

# --- the Pareto front and its steps ----------------------------------------------------------


def knee_index(costs: Sequence[float], accuracies: Sequence[float]) -> int:
    """The front member farthest above the chord from its cheapest to its most accurate end.

    Cost is taken on a log scale when every cost is positive, because the question is asked in
    ratios ("4x the cost"); both axes are scaled to [0, 1] first. Ties go to the cheaper member.
    """
    xs = np.log10(costs) if min(costs) > 0 else np.asarray(costs, dtype=float)
    ys = np.asarray(accuracies, dtype=float)

    def scaled(v: np.ndarray) -> np.ndarray:
        span = float(v.max() - v.min())
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    return int(np.argmax(scaled(ys) - scaled(np.asarray(xs, dtype=float))))


Comparer = Callable[[TrialRow, TrialRow], PairedComparison | None]


def comparer(options: ReportOptions) -> Comparer:
    cache: dict[tuple[int, int], PairedComparison | None] = {}

    def compare(a: TrialRow, b: TrialRow) -> PairedComparison | None:
        key = (a.number, b.number)
        if key not in cache:
            ca, cb = a.correct, b.correct
            cache[key] = (
                None
                if ca is None or cb is None
                else compare_paired(
                    ca, cb, options.alpha, options.power, options.n_resamples, options.seed
                )
            )
        return cache[key]

    return compare


def front_steps(front: list[TrialRow], compare: Comparer) -> list[Step]:
    """One step per pair of neighbours on the front (sorted by cost)."""
    return [Step(a, b, compare(a, b)) for a, b in itertools.pairwise(front)]


# --- recommendation --------------------------------------------------------------------------


def _is_real(comparison: PairedComparison | None, gain: float) -> bool:
    # Without predictions there is no paired test; the point estimate is all there is.
    return comparison.significant if comparison is not None else gain > 0


def _walk_up(front: list[TrialRow], options: ReportOptions, compare: Comparer) -> TrialRow | None:
    """Climb the front while each paid-for gain over the current choice is real (and worth it)."""
    affordable = [r for r in front if options.budget is None or r.cost <= options.budget]
    if not affordable:
        return None
    current = affordable[0]
    for row in affordable[1:]:
        gain = 100.0 * (row.accuracy - current.accuracy)
        worth = (
            options.value_per_point is None
            or options.value_per_point * gain >= row.cost - current.cost
        )
        if gain > 0 and worth and _is_real(compare(current, row), gain):
            current = row
    return current


def recommend(
    front: list[TrialRow],
    options: ReportOptions,
    compare: Comparer,
    n_test: int | None,
    trials: Sequence[TrialRow] = (),
) -> Recommendation:
    """Choose a front member: by value per point and/or budget, else the knee of the front.

    A step up the front is taken only when its gain is statistically real (exact McNemar at
    `options.alpha`), so the report never recommends paying for noise.
    """
    mode = (
        "value" if options.value_per_point is not None else "budget" if options.budget else "knee"
    )
    candidates = front
    if mode == "knee" and len(front) >= 3:
        # Up to the knee, and no further than real gains reach.
        candidates = front[: knee_index([r.cost for r in front], [r.accuracy for r in front]) + 1]
    chosen = _walk_up(candidates, options, compare)
    over_budget = chosen is None
    chosen = chosen or front[0]
    index = front.index(chosen)
    up = (
        Step(chosen, front[index + 1], compare(chosen, front[index + 1]))
        if index + 1 < len(front)
        else None
    )
    why = _why(up, options, mode, n_test) if up else _top(chosen, trials)
    return Recommendation(chosen, mode, f"{_what(chosen, options, over_budget)} {why}", up)


def _top(chosen: TrialRow, trials: Sequence[TrialRow]) -> str:
    dearer = [t for t in trials if t.cost > chosen.cost]
    if not dearer:
        return "It is the most accurate configuration found, and the dearest."
    many = (
        f"all {len(dearer)} dearer configurations tried were"
        if len(dearer) > 1
        else "the one dearer configuration tried was"
    )
    return f"It is the most accurate configuration found: {many} no more accurate."


def _what(chosen: TrialRow, options: ReportOptions, over_budget: bool) -> str:
    reach = f"{percent(chosen.accuracy)} test accuracy"
    if over_budget:
        return (
            f"No configuration fits the {usd(options.budget)} budget; the cheapest, "
            f"{chosen.name} ({chosen.describe()}), costs {usd(chosen.cost)} for {reach}."
        )
    return f"Choose {chosen.name} ({chosen.describe()}): {reach} for {usd(chosen.cost)}."


def _why(up: Step, options: ReportOptions, mode: str, n_test: int | None) -> str:
    head = f"The next step up, {up.dearer.name}, adds {points(up.gain_points)} for {up.price}"
    cmp = up.comparison
    if options.budget is not None and up.dearer.cost > options.budget:
        return f"{head}, but costs {usd(up.dearer.cost)}, over your {usd(options.budget)} budget."
    if not _is_real(cmp, up.gain_points):
        size = f"{n_test:,} test examples" if n_test else "this test set"
        count = cmp.examples_needed if cmp else None
        needed = f"; detecting it needs about {count:,}" if count else ""
        tested = f" (McNemar {p_text(cmp.p_value)}{needed})" if cmp else ""
        return f"{head}, but that gain is within noise for {size}{tested}: not worth paying for."
    if mode == "value":
        return f"{head}, more than the {usd(options.value_per_point)} a point is worth to you."
    return (
        f"{head}: past the knee of the front each point costs more; "
        "pass --value-per-point or --budget to price the choice."
    )

"""The Pareto front on validation accuracy against cost, its steps, and the recommendation.

Selection happens on validation, confirmation on test. The front and every step along it are
judged on the models' validation accuracies; the recommendation walks the front cheapest-first
and stops at the first step not worth it (`harness.report.decide`). Only then is the test set
read for a decision: one paired test (exact McNemar, bootstrap interval) of the chosen model
against the model it was chosen over, named before the test set is looked at. Test accuracies
are shown for every model; they are unbiased because nothing was chosen on them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from harness.report.decide import NEGLIGIBLE_SHARE, NEGLIGIBLE_USD, Move, Rule, Walk, walk
from harness.report.formats import p_text, percent, points, usd
from harness.report.model import Recommendation, ReportOptions, Step, TrialRow
from harness.report.significance import PairedComparison, UnpairedComparison, compare_paired
from harness.sweep.study import pareto_front

# --- the Pareto front and its steps ----------------------------------------------------------


def _elevation(costs: Sequence[float], accuracies: Sequence[float]) -> np.ndarray:
    xs = np.log10(costs) if min(costs) > 0 else np.asarray(costs, dtype=float)
    ys = np.asarray(accuracies, dtype=float)

    def scaled(v: np.ndarray) -> np.ndarray:
        span = float(v.max() - v.min())
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    return scaled(ys) - scaled(np.asarray(xs, dtype=float))


def knee_index(costs: Sequence[float], accuracies: Sequence[float]) -> int:
    """The front member farthest above the chord from its cheapest to its most accurate end.

    Cost is taken on a log scale when every cost is positive, because the question is asked in
    ratios ("4x the cost"); both axes are scaled to [0, 1] first. Ties go to the cheaper member.
    """
    return int(np.argmax(_elevation(costs, accuracies)))


Comparer = Callable[[TrialRow, TrialRow], PairedComparison | None]


def comparer(options: ReportOptions) -> Comparer:
    """Paired test on the test set of B against A (cached; None without predictions)."""
    cache: dict[tuple[int, int], PairedComparison | None] = {}

    def compare(a: TrialRow, b: TrialRow) -> PairedComparison | None:
        key = (a.number, b.number)
        if key not in cache:
            ca, cb = a.correct, b.correct
            cache[key] = (
                None
                if ca is None or cb is None or len(ca) != len(cb)
                else compare_paired(
                    ca, cb, options.alpha, options.power, options.n_resamples, options.seed
                )
            )
        return cache[key]

    return compare


def family(row: TrialRow, candidates: Sequence[TrialRow], budget: float | None) -> int:
    """Candidates dearer than `row` (within the budget): a step up from it is picked among them,
    so its test shares alpha among them (Bonferroni)."""
    limit = budget if budget is not None else float("inf")
    return max(1, sum(row.cost < c.cost <= limit for c in candidates))


def validation_test(
    a: TrialRow, b: TrialRow, n_valid: int | None, alpha: float
) -> UnpairedComparison | None:
    """B against A on their validation accuracies (None: the validation size is unknown)."""
    if not n_valid:
        return None
    return UnpairedComparison(n_valid, n_valid, a.selection_accuracy, b.selection_accuracy, alpha)


def front_steps(
    front: list[TrialRow], n_valid: int | None, options: ReportOptions, candidates: list[TrialRow]
) -> list[Step]:
    """One step per pair of neighbours on the front (sorted by cost), tested on validation at
    the level the walk uses from the cheaper end."""
    return [
        Step(
            a,
            b,
            validation_test(a, b, n_valid, options.alpha / family(a, candidates, options.budget)),
        )
        for a, b in itertools.pairwise(front)
    ]


# --- recommendation --------------------------------------------------------------------------


def _knee_limit(front: list[TrialRow]) -> int | None:
    """Index of the knee among the front's fine-tuned members (baselines, nearly free, would
    always be the knee); None when fewer than three of them, or none above the chord."""
    tuned = [i for i, r in enumerate(front) if not r.is_baseline]
    if len(tuned) < 3:
        return None
    costs, accuracies = [front[i].cost for i in tuned], [front[i].selection_accuracy for i in tuned]
    if float(_elevation(costs, accuracies).max()) <= 1e-9:
        return None  # no member above the chord: points get no dearer along the front, no knee
    return tuned[knee_index(costs, accuracies)]


def walk_front(
    front: list[TrialRow],
    options: ReportOptions,
    n_valid: int | None,
    candidates: Sequence[TrialRow] | None = None,
) -> Walk:
    """The decision rule of `harness.report.decide` on a front of rows drawn from `candidates`
    (default: the front alone)."""
    return walk(
        [r.selection_accuracy for r in front],
        [r.cost for r in front],
        n_valid,
        Rule(options.alpha, options.value_per_point, options.budget),
        _knee_limit(front) if _mode(options) == "knee" else None,
        [r.cost for r in (candidates if candidates is not None else front)],
    )


def _mode(options: ReportOptions) -> str:
    return (
        "value" if options.value_per_point is not None else "budget" if options.budget else "knee"
    )


def recommend(
    front: list[TrialRow],
    options: ReportOptions,
    compare: Comparer,
    n_valid: int | None,
    candidates: Sequence[TrialRow] | None = None,
) -> Recommendation:
    """Walk the validation front, then check the choice once on the test set.

    Args:
        front: The front on validation accuracy against cost (baselines included), cheapest
            first.
        options: Value per point, budget, alpha.
        compare: The paired test on the test set.
        n_valid: Validation examples every model was scored on (None: unknown).
        candidates: Every model the front was drawn from, baselines included (default: the
            front). When the answer is a baseline, the front of the fine-tuned ones alone is
            walked too, for `fine_tuned`.
    """
    pool = list(candidates) if candidates is not None else front
    trials = [r for r in pool if not r.is_baseline]
    result = walk_front(front, options, n_valid, pool)
    chosen = front[result.chosen]
    move = result.deciding
    step = Step(front[move.start], front[move.end], move.test) if move else None
    rival = front[result.chosen_over] if result.chosen_over is not None else None
    check = compare(rival, chosen) if rival is not None else None
    bought = result.chosen_over is not None and result.chosen_over < result.chosen
    text = " ".join(
        part
        for part in (
            _what(chosen, options, result, front),
            _why(move, step, options, n_valid) if move and step else _top(chosen, trials),
            _confirm(chosen, rival, check, bought),
        )
        if part
    )
    fine_tuned: TrialRow | None = chosen
    if chosen.is_baseline:
        tuned = [trials[i] for i in pareto_front([(r.selection_accuracy, r.cost) for r in trials])]
        fine_tuned = tuned[walk_front(tuned, options, n_valid, trials).chosen] if tuned else None
    return Recommendation(
        chosen, _mode(options), text, result, step, move, rival, check, fine_tuned
    )


def reach(row: TrialRow) -> str:
    """`81.0% validation accuracy (79.5% on the test set)`."""
    if row.valid_accuracy is None:
        return f"{percent(row.accuracy)} test accuracy"
    return f"{percent(row.valid_accuracy)} validation accuracy ({percent(row.accuracy)} on test)"


def _what(chosen: TrialRow, options: ReportOptions, result: Walk, front: list[TrialRow]) -> str:
    described = f"{chosen.name} ({chosen.describe()})"
    if result.over_budget:
        return (
            f"No configuration fits the {usd(options.budget)} budget; the cheapest, "
            f"{described}, costs {usd(chosen.cost)} for {reach(chosen)}."
        )
    if not chosen.is_baseline:
        return f"Choose {described}: {reach(chosen)} for {usd(chosen.cost)}."
    move = result.deciding
    if move is not None and move.kind == "budget":
        head = f"Don't fine-tune within the {usd(options.budget)} budget: {described}"
    elif all(r.is_baseline for r in front):
        head = f"Don't fine-tune: {described} beats every fine-tuned model tried, for less"
    else:
        head = f"Don't fine-tune: {described} is as good for less"
    return f"{head}: {reach(chosen)} for {usd(chosen.cost)}."


def _top(chosen: TrialRow, trials: Sequence[TrialRow]) -> str:
    dearer = [t for t in trials if t.cost > chosen.cost]
    if not dearer:
        return "It is the most accurate configuration found, and the dearest."
    many = (
        f"all {len(dearer)} dearer configurations tried were"
        if len(dearer) > 1
        else "the one dearer configuration tried was"
    )
    return f"It is the most accurate configuration found: {many} no more accurate on validation."


def _evidence(move: Move, n_valid: int | None) -> str:
    test = move.test
    if test is None:
        return "no validation size known, so the point estimate decides"
    needed = test.examples_needed()
    tell = f"; about {needed:,} would tell" if needed and not test.gain_shown else ""
    shared = (
        f", needs p < {test.alpha:.2g} ({test.alpha * move.family:g} shared among "
        f"{move.family} dearer candidates)"
        if move.family > 1
        else ""
    )
    return f"{n_valid:,} validation examples, one-sided {p_text(test.p_value)}{shared}{tell}"


def _why(move: Move, step: Step, options: ReportOptions, n_valid: int | None) -> str:
    """The comparison that decided the choice, in one sentence."""
    gain = f"{points(step.gain_points)} on validation"
    if move.kind == "budget":
        return (
            f"The next step up, {step.dearer.name}, costs {usd(step.dearer.cost)}, over your "
            f"{usd(options.budget)} budget."
        )
    if move.kind == "knee":
        return (
            f"The next step up, {step.dearer.name}, adds {gain} for {step.price}: past the knee "
            "of the front each point costs more; pass --value-per-point or --budget to price "
            "the choice."
        )
    if move.kind == "negligible" and not move.taken:
        return (
            f"{step.dearer.name} costs at most {NEGLIGIBLE_SHARE:.0%} (or {usd(NEGLIGIBLE_USD)}) "
            "more and is no more accurate on validation."
        )
    if move.kind == "negligible":
        return (
            f"It costs at most {NEGLIGIBLE_SHARE:.0%} (or {usd(NEGLIGIBLE_USD)}) more than "
            f"{step.cheaper.name} and adds {gain}: at a negligible extra cost the point "
            "estimate decides."
        )
    value = _value_text(move, options)
    if not move.taken:
        # The best case among the dearer members the walk could reach; none was worth it.
        verdict = value or f"within noise ({_evidence(move, n_valid)})"
        which = (
            f"The next step up, {step.dearer.name},"
            if move.end == move.start + 1
            else f"No step up is worth it; the closest, {step.dearer.name},"
        )
        return f"{which} adds {gain} for {step.price}: {verdict}: not worth paying for."
    shown = value or f"shown ({_evidence(move, n_valid)})"
    return (
        f"Each step up the front to it was worth it; the last, over {step.cheaper.name}, adds "
        f"{gain} for {step.price}: {shown}."
    )


def _value_text(move: Move, options: ReportOptions) -> str:
    net = move.net_value
    if net is None:
        return ""
    estimate, low, high = net
    level = move.test.alpha if move.test is not None else options.alpha
    confidence = f"{100 * (1 - 2 * level):.3g}%"
    sure = "surely positive" if move.taken else "not surely positive"
    return (
        f"at {usd(options.value_per_point)} a point its net value (value x gain - extra cost) is "
        f"{usd(estimate)} ({confidence} interval {usd(low)} to {usd(high)}), {sure}"
    )


def _confirm(
    chosen: TrialRow, rival: TrialRow | None, cmp: PairedComparison | None, bought: bool
) -> str:
    """The one test-set comparison, stated before the test set was read: the chosen model
    against the one it was bought over (`bought`), else against the dearer one it was preferred
    to."""
    if rival is None:
        return ""
    if cmp is None:
        return f"Not checked on the test set against {rival.name}: no per-example predictions."
    diff = 100 * cmp.difference
    tested = f"McNemar {p_text(cmp.p_value)}, 95% CI {ci_text(cmp)} points"
    against = f"On the test set, checked once against {rival.name}: {points(diff)} ({tested})"
    if bought:
        if cmp.significant and diff > 0:
            return f"{against}: confirmed."
        if cmp.significant:
            return f"{against}: the test set contradicts the gain; treat it as unproven."
        return f"{against}: not confirmed there, so the gain may be smaller than validation says."
    if cmp.significant and diff < 0:
        return (
            f"{against}: the test set favours {rival.name}; the choice stands on validation, "
            "and a larger validation set would settle it."
        )
    return f"{against}: consistent with not paying for {rival.name}."


def ci_text(cmp: PairedComparison | None) -> str:
    return "-" if cmp is None else f"{100 * cmp.ci_low:+.1f} to {100 * cmp.ci_high:+.1f}"

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
from dataclasses import replace

import numpy as np

from harness.report.decide import NEGLIGIBLE_SHARE, Move, Rule, Walk, walk
from harness.report.evidence import Evidence
from harness.report.formats import chance, p_text, percent, points, usd
from harness.report.model import Recommendation, ReportOptions, Step, TrialRow
from harness.report.significance import PairedComparison, compare_paired
from harness.sweep.pareto import pareto_front

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


def evidence_of(
    candidates: Sequence[TrialRow], n_valid: int | None, alpha: float, priced: bool = False
) -> Evidence:
    """The validation evidence of every candidate (paired where each recorded its answers);
    `priced`: a value per point weighs the gains (see `Evidence`)."""
    return Evidence(
        [r.selection_accuracy for r in candidates],
        [r.valid_correct for r in candidates],
        [r.baseline is None or r.baseline.tuned for r in candidates],  # picked from many
        [r.weighed_cost for r in candidates],
        n_valid,
        alpha,
        priced,
    )


def _index(rows: Sequence[TrialRow], candidates: Sequence[TrialRow]) -> list[int]:
    where = {id(r): i for i, r in enumerate(candidates)}
    return [where[id(r)] for r in rows]


def front_steps(
    front: list[TrialRow], n_valid: int | None, options: ReportOptions, candidates: list[TrialRow]
) -> list[Step]:
    """One step per pair of neighbours on the front (sorted by cost), each a claim tested paired
    on validation at alpha shared among the candidates dearer than the cheaper end (the front
    was picked from them on the same data)."""
    evidence = evidence_of(candidates, n_valid, options.alpha)
    index = _index(front, candidates)
    limit = options.budget if options.budget is not None else float("inf")
    steps = []
    pairs = zip(itertools.pairwise(front), itertools.pairwise(index), strict=True)
    for (a, b), (i, j) in pairs:
        family = max(1, sum(a.weighed_cost < c.weighed_cost <= limit for c in candidates))
        steps.append(Step(a, b, evidence.compare(i, j, options.alpha / family)))
    return steps


# --- recommendation --------------------------------------------------------------------------


def knee_limit(
    costs: Sequence[float],
    accuracies: Sequence[float],
    tuned: Sequence[bool],
    shown: Callable[[int, int], bool] | None = None,
) -> int | None:
    """Index of the last front member within reach of the knee; None when fewer than three
    fine-tuned members make steps, or none lies above the chord.

    The knee is found among the fine-tuned members (baselines being nearly free). With `shown`
    (is member j shown better than member i on validation?) only real steps count: a member is
    kept when shown better than the last kept one, so a bump of noise among cheap, weak
    configurations does not make a knee before the good ones. Within reach: the knee, the
    members after it up to the next real step (its plateau), then any member dearer than the
    knee by a negligible share.
    """
    chosen = [i for i, t in enumerate(tuned) if t]
    steps = chosen
    if shown is not None and chosen:
        steps = [chosen[0]]
        for i in chosen[1:]:
            if shown(steps[-1], i):
                steps.append(i)
    if len(steps) < 3:
        return None
    xs, ys = [costs[i] for i in steps], [accuracies[i] for i in steps]
    if float(_elevation(xs, ys).max()) <= 1e-9:
        return None  # no member above the chord: points get no dearer along the front, no knee
    at = knee_index(xs, ys)
    knee = steps[at]
    last = steps[at + 1] - 1 if shown is not None and at + 1 < len(steps) else knee
    while last + 1 < len(costs) and costs[last + 1] - costs[knee] <= NEGLIGIBLE_SHARE * costs[knee]:
        last += 1
    return last


def walk_front(
    front: list[TrialRow],
    options: ReportOptions,
    n_valid: int | None,
    candidates: Sequence[TrialRow] | None = None,
) -> Walk:
    """The decision rule of `harness.report.decide` on a front of rows drawn from `candidates`
    (default: the front alone)."""
    pool = list(candidates) if candidates is not None else list(front)
    index = _index(front, pool)
    evidence = evidence_of(pool, n_valid, options.alpha, options.value_per_point is not None)
    last = None
    if _mode(options) == "knee":
        last = knee_limit(
            [r.weighed_cost for r in front],
            [r.selection_accuracy for r in front],
            [not r.is_baseline for r in front],
            lambda i, j: evidence.shown_better(index[i], index[j]),
        )
    rule = Rule(options.alpha, options.value_per_point, options.budget, options.risk)
    return walk(index, evidence, rule, last)


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
        options: Value per point, budget, alpha, risk.
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
            _what(chosen, options, result, front, trials),
            _why(move, step, options, n_valid) if move and step else _top(chosen, trials),
            _confirm(chosen, rival, check, bought, _priced_out(move, options)),
        )
        if part
    )
    fine_tuned = _fine_tuned(trials, options, n_valid) if chosen.is_baseline else chosen
    return Recommendation(
        chosen, _mode(options), text, result, step, move, rival, check, fine_tuned
    )


def _fine_tuned(
    trials: list[TrialRow], options: ReportOptions, n_valid: int | None
) -> TrialRow | None:
    """What the walk takes among the fine-tuned trials alone (what to fine-tune anyway). Where
    the budget rules every one out, going over it is the premise: the walk without it (else it
    would name the cheapest, however little it learned)."""
    scored = [(r.selection_accuracy, r.weighed_cost) for r in trials]
    tuned = [trials[i] for i in pareto_front(scored)]
    if not tuned:
        return None
    result = walk_front(tuned, options, n_valid, trials)
    if result.over_budget:  # what the budget bounds (with a volume, the first year's cost)
        result = walk_front(tuned, replace(options, budget=None), n_valid, trials)
    return tuned[result.chosen]


def reach(row: TrialRow) -> str:
    """`79.5% test accuracy (chosen on 81.0% validation accuracy)`: the test figure first, read
    once and unbiased; the validation figure is the one the choice was made on, which picking
    the best of many inflates."""
    if row.valid_accuracy is None:
        return f"{percent(row.accuracy)} test accuracy"
    chosen_on = percent(row.valid_accuracy)
    return f"{percent(row.accuracy)} test accuracy (chosen on {chosen_on} validation)"


def _what(
    chosen: TrialRow,
    options: ReportOptions,
    result: Walk,
    front: list[TrialRow],
    trials: Sequence[TrialRow],
) -> str:
    described = f"{chosen.name} ({chosen.describe()})"
    if result.over_budget:
        return (
            f"No configuration fits the {usd(options.budget)} budget; the cheapest, "
            f"{described}, costs {chosen.cost_text()} for {reach(chosen)}."
        )
    if not chosen.is_baseline:
        return f"Choose {described}: {reach(chosen)} for {chosen.cost_text()}."
    move = result.deciding
    if move is not None and move.kind == "budget":
        head = f"Don't fine-tune within the {usd(options.budget)} budget: {described}"
    elif all(r.is_baseline for r in front):
        # Off the front, a fine-tuned model may still tie it on validation, for more money.
        best = max((t.selection_accuracy for t in trials), default=None)
        tied = best is not None and best >= chosen.selection_accuracy
        verb = "is as accurate as the best" if tied else "beats every"
        head = f"Don't fine-tune: {described} {verb} fine-tuned model tried, for less"
    elif priced := _priced_out(move, options):  # the dearer one is better, not worth it
        head = f"Don't fine-tune: {described} is the better buy {priced}"
    else:
        head = f"Don't fine-tune: {described} is as good for less"
    return f"{head}: {reach(chosen)} for {chosen.cost_text()}."


def _top(chosen: TrialRow, trials: Sequence[TrialRow]) -> str:
    dearer = [t for t in trials if t.weighed_cost > chosen.weighed_cost]
    if not dearer:
        return "It is the most accurate configuration found, and the dearest."
    many = (
        f"all {len(dearer)} dearer configurations tried were"
        if len(dearer) > 1
        else "the one dearer configuration tried was"
    )
    return f"It is the most accurate configuration found: {many} no more accurate on validation."


def _evidence(move: Move, n_valid: int | None) -> str:
    """The numbers behind a comparison: the selection-corrected gain, its interval and chance,
    and the raw test with the level it was held to."""
    test, estimate = move.test, move.estimate
    if test is None or estimate is None:
        return "no validation size known, so the point estimate decides"
    kind = "paired" if test.paired else "unpaired: recorded before answers were kept"
    # The family the level is shared in, not the whole field: said so, lest it read as a count
    # of every candidate (the compare run's `candidates` metric).
    shared = f" at {test.alpha:.2g} (alpha shared among {move.family} candidates)"
    shared = shared if move.family > 1 else ""
    raw = f"{n_valid:,} validation examples, {kind}, one-sided {p_text(test.p_value)}{shared}"
    if estimate.pooled:
        return f"no difference between them is shown, so they tie; {raw}"
    low, high = estimate.interval()
    corrected = (
        "after correcting for selection"
        if estimate.corrected
        else "(one comparison: nothing picked from many to correct)"
    )
    return (
        f"{points(100 * estimate.gain)} expected {corrected}, 95% interval "
        f"{points(100 * low)} to {points(100 * high)}, {chance(estimate.probability)} likely "
        f"better; {raw}"
    )


def _why(move: Move, step: Step, options: ReportOptions, n_valid: int | None) -> str:
    """The comparison that decided the choice, in one sentence."""
    gain = f"{points(step.gain_points)} on validation"
    if move.kind == "budget":
        cost, year = usd(step.dearer.cost), step.dearer.decision_cost
        if options.weigh_running and year is not None:  # what the budget was weighed against
            cost = (
                f"{usd(year)} in its first year (training, then 12 months of "
                f"{options.monthly_requests:,} requests)"
            )
        return (
            f"The next step up, {step.dearer.name}, costs {cost}, over your "
            f"{usd(options.budget)} budget."
        )
    if move.kind == "knee":
        return (
            f"The next step up, {step.dearer.name}, adds {gain} for {step.price}: past the knee "
            "of the front each point costs more; pass --value-per-point or --budget to price "
            "the choice."
        )
    evidence, value = _evidence(move, n_valid), _value_text(move, options)
    worth = f"; {value}" if value else ""
    if move.taken:
        return f"Bought over {step.cheaper.name}: {gain} for {step.price} ({evidence}){worth}."
    if not move.shown:
        return (
            f"Not worth paying for {step.dearer.name}, the best dearer option: it adds {gain} "
            f"for {step.price}, not shown to be better than {step.cheaper.name} ({evidence})."
        )
    return (
        f"Not worth paying for {step.dearer.name}, the best dearer option: it adds {gain} for "
        f"{step.price} ({evidence}){worth or '; not worth its price'}."
    )


def _value_text(move: Move, options: ReportOptions) -> str:
    net = move.net_value
    if net is None:
        return ""
    estimate, low, high = net
    extra = "extra first-year cost" if options.weigh_running else "extra cost"
    text = (
        f"at {usd(options.value_per_point)} a point its expected net value (value x gain - "
        f"{extra}) is {usd(estimate)} (95% interval {usd(low)} to {usd(high)})"
    )
    if options.risk < 0.5 and move.estimate is not None and options.value_per_point:
        at_risk = 100.0 * options.value_per_point * move.estimate.quantile(options.risk)
        text += (
            f"; decided on its {100 * options.risk:g}% quantile (--risk {options.risk:g}): "
            f"{usd(at_risk - move.extra_cost)}"
        )
    return text


def _priced_out(move: Move | None, options: ReportOptions) -> str | None:
    """`at $X a point`, where the walk declined a dearer model whose gain it had shown: its
    price, not its accuracy, decided (None otherwise)."""
    declined = move is not None and move.kind == "tested" and move.shown and not move.taken
    if not declined or options.value_per_point is None:
        return None
    return f"at {usd(options.value_per_point)} a point"


def _confirm(
    chosen: TrialRow,
    rival: TrialRow | None,
    cmp: PairedComparison | None,
    bought: bool,
    priced_out: str | None = None,
) -> str:
    """The one test-set comparison, stated before the test set was read: the chosen model
    against the one it was bought over (`bought`), else against the dearer one it was preferred
    to (`priced_out`: for its price, its gain shown on validation)."""
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
    if cmp.significant and diff < 0 and priced_out:
        return (
            f"{against}: the test set agrees that {rival.name} is more accurate, as validation "
            f"showed; {priced_out} it is not worth its price."
        )
    if cmp.significant and diff < 0:
        return (
            f"{against}: the test set favours {rival.name}; the choice stands on validation, "
            "and a larger validation set would settle it."
        )
    return f"{against}: consistent with not paying for {rival.name}."


def ci_text(cmp: PairedComparison | None) -> str:
    return "-" if cmp is None else f"{100 * cmp.ci_low:+.1f} to {100 * cmp.ci_high:+.1f}"

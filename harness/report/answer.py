"""The answer in words: verdicts, the lines that open the report and the terminal summary."""

from __future__ import annotations

import math

from harness.report.decide import Move
from harness.report.evidence import ValidationComparison
from harness.report.formats import p_text, percent, points, usd
from harness.report.front import reach
from harness.report.model import Report, ReportOptions, Step, TrialRow
from harness.report.significance import ALPHA

# --- verdicts --------------------------------------------------------------------------------


def step_verdict(cmp: ValidationComparison | None) -> str:
    """A step up the front judged on validation: `gain shown`, `within noise (...)`, `untested`."""
    if cmp is None:
        return "untested (validation size unknown)"
    if cmp.gain_shown:
        return "gain shown"
    needed = cmp.examples_needed()
    if needed is None or cmp.difference <= 0:
        return "within noise (no gain)"
    if cmp.p_value < ALPHA:
        # Small p, still noise: the step is one of several candidates, each tested at alpha over
        # their number (see `decide`); p = 0.004 alone must not read as a gain.
        return (
            f"within noise for the several candidates tried (needs p < {cmp.alpha:.2g}; "
            f"about {needed:,} validation examples would tell)"
        )
    return f"within noise (about {needed:,} validation examples would tell)"


def versus_verdict(cmp: ValidationComparison | None) -> str:
    """B against A in either direction: `gain`, `loss` (never called real) or `within noise`."""
    if cmp is None:
        return ""
    if cmp.gain_shown:
        return f"gain ({p_text(cmp.p_value)})"
    if cmp.loss_shown:
        return f"loss ({p_text(cmp.p_value_loss)})"
    return "within noise"


def move_text(move: Move | None, index: int, start: str) -> str:
    """What the walk did about front member `index` (from `Walk.fate`); `start` names the member
    the walk compared it with, when that is not its cheaper neighbour on the front."""
    text = _move_text(move, index)
    direct = move is not None and move.end == index and move.start != index - 1
    return f"{text} (against {start})" if direct else text


def _move_text(move: Move | None, index: int) -> str:
    if move is None:
        return "not reached"
    if move.kind == "budget":
        return "stops here: over budget"
    if move.kind == "knee":
        return "stops here: past the knee"
    if move.taken:
        return "bought" if move.end == index else "passed over: a dearer one was worth more"
    return "not worth it" if move.shown else "gain not shown"


# --- the answer ------------------------------------------------------------------------------


def synthetic_lines(report: Report) -> list[str]:
    """Before the answer, where trials ran on a test server: nothing in it is a result."""
    if not report.synthetic:
        return []
    return [
        "Synthetic: these trials ran on a test server on this machine, not a provider: their "
        "accuracies and costs prove the plumbing only and are not results to act on."
    ]


def answer_lines(report: Report) -> list[str]:
    """The lines that answer the question: recommendation, baseline check, running cost, basis."""
    rec = report.recommendation
    lines = [
        f"Answer: {rec.text}",
        *_anyway_line(report),
        *_baseline_line(report),
        *_running_cost_line(report),
        *_register_line(report),
    ]
    running = (
        f" ({report.running} still running: this report covers the completed ones)"
        if report.running
        else ""
    )
    sizes = [
        f"{n:,} {what} examples"
        for n, what in ((report.n_valid, "validation"), (report.n_test, "test"))
        if n
    ]
    size = f", {' and '.join(sizes)}" if sizes else ""
    checkpoints = sum(t.record.is_checkpoint for t in report.trials)
    trained = len(report.trials) - checkpoints
    counted = f"{trained} completed trial{'s' if trained != 1 else ''}"
    if checkpoints:  # each a model of its own, but not a trial that was run
        counted += f" and {checkpoints} epoch checkpoint{'s' if checkpoints != 1 else ''}"
    lines.append(
        f"Based on {counted}"
        f"{running}{size}, {len(report.front)} on the Pareto front of {report.selected_on} "
        f"accuracy against {cost_basis(report.options)} (baselines included), US dollars."
    )
    return lines


def cost_basis(options: ReportOptions) -> str:
    """The cost the front is formed on, in words."""
    if options.weigh_running:
        return (
            "first-year cost (training, then 12 months of "
            f"{options.monthly_requests:,} requests a month, hosting included)"
        )
    return "cost (training + test-set evaluation)"


def _anyway_line(report: Report) -> list[str]:
    rec = report.recommendation
    tuned = rec.fine_tuned
    if not rec.chosen.is_baseline or tuned is None:
        return []
    line = (
        f"If you fine-tune anyway: {tuned.name} ({tuned.describe()}), {reach(tuned)} for "
        f"{tuned.cost_text()}; {_promote_hint(report, tuned)}."
    )
    majority = next((b for b in report.baselines if b.name == "majority class"), None)
    n = report.n_valid or 0
    if majority is not None and majority.valid_accuracy is not None and n:
        chance = majority.valid_accuracy
        # Within one standard error of always answering one label: it learned nothing.
        if tuned.selection_accuracy <= chance + math.sqrt(chance * (1 - chance) / n):
            line = line[:-1] + (
                f", though it learned nothing: {percent(tuned.selection_accuracy)} on validation,"
                f" where always answering one label scores {percent(chance)}."
            )
    return [line]


def _promote_hint(report: Report, tuned: TrialRow) -> str:
    """How to register `tuned`: `harness promote` takes the answer of the report without
    options, of the one study it is given, so anything else needs the study and --trial."""
    o, default = report.options, ReportOptions()
    asked = (o.value_per_point, o.budget, o.weigh_running, o.alpha, o.risk)
    if tuned.origin is None and asked == (
        default.value_per_point,
        default.budget,
        default.weigh_running,
        default.alpha,
        default.risk,
    ):
        return "`harness promote` registers it by default"
    study = tuned.source or report.study
    return f"`harness promote {study} --trial {tuned.trial_number}` registers it"


def _register_line(report: Report) -> list[str]:
    """A fine-tuned answer `harness promote` would not register by default (a priced report's,
    a comparison's): the command that registers it."""
    chosen = report.recommendation.chosen
    hint = "" if chosen.is_baseline else _promote_hint(report, chosen)
    return [f"{hint}."] if hint and not hint.endswith("by default") else []


def _baseline_line(report: Report) -> list[str]:
    best, chosen = report.best_baseline, report.recommendation.chosen
    if best is None or best.accuracy is None or chosen.is_baseline:
        return []
    cmp = report.baseline_comparisons.get(chosen.number)
    if cmp is None:
        gain = 100 * (chosen.accuracy - best.accuracy)
        return [f"Against the best baseline ({best.name}): {points(gain)} on test, untested."]
    judged = versus_verdict(cmp)
    tail = ": fine-tuning has not beaten it" if judged == "within noise" else ""
    against = (
        f"Against the best baseline ({best.name}, {percent(best.selection_accuracy)} validation, "
        f"{percent(best.accuracy)} test)"
    )
    return [f"{against}: {points(100 * cmp.difference)} on validation, {judged}{tail}."]


def _running_cost_line(report: Report) -> list[str]:
    rec = report.recommendation
    row = rec.chosen if not rec.chosen.is_baseline else None
    own = next((o for o in report.ownership if row is not None and o.number == row.number), None)
    if own is None or own.monthly is None:
        return []
    hosting = own.hosting_per_month
    of_which = f", of which {usd(hosting)} hosting," if hosting is not None else ""
    return [
        f"Running it: {usd(own.training)} to train, then {usd(own.monthly)} a month{of_which} at "
        f"{report.options.monthly_requests:,} requests ({usd(own.months(12))} in the first year)."
    ]


def walk_text(report: Report, dearer: TrialRow) -> str:
    """What the walk did about front member `dearer`, naming the member it was weighed against
    when that is not its cheaper neighbour."""
    index = next(i for i, r in enumerate(report.front) if r is dearer)
    move = report.recommendation.walk.fate(index)
    start = report.front[move.start].name if move is not None else ""
    return move_text(move, index, start)


def step_line(step: Step, report: Report) -> str:
    """One step along the front in words, for the terminal: the claim (is the step's gain
    shown?) and, apart from it, what the walk did, so the two never read as one verdict."""
    cmp = step.valid
    tested = f" (one-sided {p_text(cmp.p_value)})" if cmp else ""
    return (
        f"  {step.cheaper.name} -> {step.dearer.name}: {points(step.gain_points)} on validation "
        f"for {step.price}: {step_verdict(cmp)}{tested}; the walk: {walk_text(report, step.dearer)}"
    )

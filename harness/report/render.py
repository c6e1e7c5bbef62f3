"""Render a `Report`: markdown, self-contained HTML, PNG charts and a trials CSV.

Both documents are drawn from one list of blocks (heading, paragraph, table, image), so the
markdown and the HTML always say the same thing. The HTML carries everything inline (CSS, an SVG
accuracy-against-cost chart with hover tooltips, PNGs as data URIs): it opens from an MLflow
artifact view or an e-mail attachment without any network access.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.charts import accuracy_cost_png, epochs_png
from harness.report.formats import IMAGES, Block, p_text, percent, points, ratio, usd
from harness.report.markup import to_html, to_markdown
from harness.report.model import Report, Step, TrialRow
from harness.report.significance import PairedComparison

PARAM_ORDER = ("n_epochs", "learning_rate_multiplier", "batch_size", "train_examples", "base_model")


# --- verdicts and the answer ----------------------------------------------------------------


def verdict(cmp: PairedComparison | None) -> str:
    """`real`, `within noise (about N examples would tell)` or `untested`."""
    if cmp is None:
        return "untested (no predictions)"
    if cmp.significant:
        return "real"
    if cmp.examples_needed is None:
        return "within noise (no difference)"
    return f"within noise (about {cmp.examples_needed:,} test examples would tell)"


def _ci(cmp: PairedComparison | None) -> str:
    return "-" if cmp is None else f"{100 * cmp.ci_low:+.1f} to {100 * cmp.ci_high:+.1f}"


def _detectable(cmp: PairedComparison | None) -> str:
    if cmp is None:
        return "-"
    return (
        "none at this size"
        if cmp.minimum_detectable is None
        else f"{100 * cmp.minimum_detectable:.1f} points"
    )


def answer_lines(report: Report) -> list[str]:
    """The lines that answer the question: recommendation, baseline check, running cost, basis."""
    rec = report.recommendation
    lines = [f"Answer: {rec.text}", *_baseline_line(report), *_running_cost_line(report)]
    running = (
        f" ({report.running} still running: this report covers the completed ones)"
        if report.running
        else ""
    )
    size = f", {report.n_test:,} test examples" if report.n_test else ""
    lines.append(
        f"Based on {len(report.trials)} completed trial{'s' if len(report.trials) != 1 else ''}"
        f"{running}{size}, {len(report.front)} on "
        "the Pareto front; cost = training + test-set evaluation, US dollars."
    )
    return lines


def _baseline_line(report: Report) -> list[str]:
    best, chosen = report.best_baseline, report.recommendation.chosen
    if best is None or best.accuracy is None:
        return []
    gain = 100 * (chosen.accuracy - best.accuracy)
    cmp = report.baseline_comparisons.get(chosen.number)
    if cmp is None:
        judged = "untested (no predictions)"
    elif cmp.significant and gain > 0:
        judged = f"real (McNemar {p_text(cmp.p_value)})"
    elif cmp.significant:
        judged = f"the baseline is really better (McNemar {p_text(cmp.p_value)})"
    else:
        judged = f"within noise (McNemar {p_text(cmp.p_value)}): fine-tuning has not beaten it"
    against = f"Against the best baseline ({best.name}, {percent(best.accuracy)})"
    return [f"{against}: {points(gain)}, {judged}."]


def _running_cost_line(report: Report) -> list[str]:
    number = report.recommendation.chosen.number
    own = next((o for o in report.ownership if o.number == number), None)
    if own is None or own.monthly is None:
        return []
    return [
        f"Running it: {usd(own.training)} to train, then {usd(own.monthly)} a month at "
        f"{report.options.monthly_requests:,} requests ({usd(own.months(12))} in the first year)."
    ]


def step_line(step: Step) -> str:
    """One step along the front in words, for the terminal."""
    cmp = step.comparison
    p_value = f", McNemar {p_text(cmp.p_value)}, 95% CI {_ci(cmp)} points" if cmp else ""
    return (
        f"  {step.cheaper.name} -> {step.dearer.name}: {points(step.gain_points)} for "
        f"{step.price}: "
        f"{verdict(cmp)}{p_value}"
    )


# --- sections --------------------------------------------------------------------------------


def blocks(report: Report) -> list[Block]:
    """The whole report as blocks, in reading order."""
    answer = answer_lines(report)
    result: list[Block] = [
        ("h1", f"{report.experiment}: which fine-tuning setup is worth paying for?"),
        ("p", f"**Answer:** {answer[0].removeprefix('Answer: ')}"),
        *[("p", line) for line in answer[1:]],
        *[("p", f"Note: {note}") for note in report.notes],
    ]
    for section in (_front, _baselines, _trials, _epochs, _ownership, _qualitative, _method):
        result += section(report)
    return result


def _front(report: Report) -> list[Block]:
    rows = [
        [
            f"{s.cheaper.name} -> {s.dearer.name}",
            f"{percent(s.cheaper.accuracy)} -> {percent(s.dearer.accuracy)}",
            points(s.gain_points),
            ratio(s.cost_ratio),
            usd(s.extra_cost),
            usd(s.dollars_per_point),
            p_text(s.comparison.p_value) if s.comparison else "-",
            _ci(s.comparison),
            _detectable(s.comparison),
            verdict(s.comparison),
        ]
        for s in report.steps
    ]
    headers = ["step", "accuracy", "gain", "cost ratio", "extra cost", "$ per point"]
    headers += ["McNemar", "95% CI (points)", "smallest detectable gain", "verdict"]
    intro = (
        "Each step moves to the next dearer configuration on the Pareto front. A gain is real "
        'when the exact McNemar test on the same test examples rejects "no difference" at '
        f"{report.options.alpha:g}; the smallest detectable gain is what this test set detects "
        f"with {report.options.power:.0%} power at the two models' observed disagreement."
    )
    table: list[Block] = (
        [("table", (headers, rows))] if rows else [("p", "The front has one member: no steps.")]
    )
    return [
        ("h2", "Steps along the Pareto front"),
        ("p", intro),
        *table,
        ("chart", (IMAGES["chart"], "Accuracy against cost")),
    ]


def _baselines(report: Report) -> list[Block]:
    rows = [
        [
            b.name,
            percent(b.accuracy) if b.accuracy is not None else "-",
            f"{b.macro_f1:.3f}" if b.macro_f1 is not None else "-",
            usd(b.cost),
            b.note,
        ]
        for b in report.baselines
    ]
    return [
        ("h2", "Baselines on the same test set"),
        ("table", (["baseline", "accuracy", "macro F1", "cost", "note"], rows)),
    ]


def _param_names(trials: list[TrialRow]) -> list[str]:
    names = {k for t in trials for k in t.params}
    return [n for n in PARAM_ORDER if n in names] + sorted(names - set(PARAM_ORDER))


def trials_frame(report: Report) -> pd.DataFrame:
    """One row per completed trial: hyperparameters, scores, cost, time, gain over the baseline."""
    best = report.best_baseline
    records = []
    for t in report.trials:
        cmp = report.baseline_comparisons.get(t.number)
        gain = 100 * (t.accuracy - best.accuracy) if best and best.accuracy is not None else None
        records.append(
            {
                "trial": t.number,
                "front": "yes" if t.on_front else "",
                **{n: t.params.get(n, "") for n in _param_names(report.trials)},
                "accuracy": t.accuracy,
                "macro_f1": t.record.test_macro_f1,
                "weighted_f1": t.record.test_weighted_f1,
                "mae": t.record.test_mae,
                "cost_usd": t.cost,
                "wall_seconds": t.record.wall_seconds,
                "vs_best_baseline_points": gain,
                "vs_best_baseline": verdict(cmp) if cmp else "",
            }
        )
    return pd.DataFrame.from_records(records)


def _cell(value: Any, column: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column == "cost_usd":
        return usd(float(value))
    if column == "accuracy":
        return percent(float(value))
    if column == "vs_best_baseline_points":
        return f"{float(value):+.1f}"
    if column == "wall_seconds":
        return f"{float(value):.0f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trials(report: Report) -> list[Block]:
    frame = trials_frame(report)
    rows = [[_cell(v, c) for c, v in row.items()] for row in frame.to_dict("records")]
    best = report.best_baseline
    intro = (
        f"Gains are against the best baseline ({best.name})." if best else "No baseline was scored."
    )
    headers = [str(c).replace("_", " ") for c in frame.columns]
    return [("h2", "All completed trials"), ("p", intro), ("table", (headers, rows))]


def _epochs(report: Report) -> list[Block]:
    past = [e for e in report.epochs if e.peak_epoch < e.epochs]
    if not report.epochs:
        return [("h2", "Per-epoch curves"), ("p", "No per-epoch validation results were recorded.")]
    if past:
        text = (
            f"Validation accuracy peaked before the last epoch in {len(past)} of "
            f"{len(report.epochs)} trials; the epochs after the peak cost "
            f"{usd(sum(e.cost_after_peak for e in past))} in all and bought no validation "
            "accuracy: that is where another epoch stops paying."
        )
    else:
        text = "Every trial was still improving at its last epoch: another epoch may still pay."
    rows = [
        [
            f"trial {e.number}",
            str(e.epochs),
            str(e.peak_epoch),
            percent(e.peak_accuracy),
            usd(e.cost_after_peak),
        ]
        for e in report.epochs
    ]
    headers = ["trial", "epochs", "peak epoch", "peak validation accuracy", "cost after the peak"]
    return [
        ("h2", "Per-epoch curves"),
        ("p", text),
        ("image", (IMAGES["epochs"], "Validation accuracy and cost by epoch")),
        ("table", (headers, rows)),
    ]


def _ownership(report: Report) -> list[Block]:
    n = report.options.monthly_requests
    front = {t.number for t in report.front}
    rows = [
        [
            f"trial {o.number}",
            "yes" if o.number in front else "",
            usd(o.training),
            usd(o.per_request * 1000 if o.per_request is not None else None),
            usd(o.monthly),
            usd(o.months(1)),
            usd(o.months(12)),
        ]
        for o in sorted(report.ownership, key=lambda o: (o.number not in front, o.number))
    ]
    basis = (
        f"the trial's test-set evaluation cost / {report.n_test:,} test examples"
        if report.n_test
        else "not known (no test-set size)"
    )
    text = f"Training once, then serving {n:,} requests a month. Inference per request = {basis}."
    headers = ["trial", "front", "training", "per 1,000 requests", f"per month ({n:,})"]
    headers += ["first month", "first year"]
    return [("h2", "Total cost of ownership"), ("p", text), ("table", (headers, rows))]


def _qualitative(report: Report) -> list[Block]:
    chosen, neighbour, sample = report.recommendation.chosen, report.neighbour, report.sample
    head: list[Block] = [("h2", "Misclassified examples")]
    if sample.empty:
        text = f"No misclassified examples to show for {chosen.name} (or no predictions)."
        return [*head, ("p", text)]
    side = neighbour is not None and "neighbour" in sample.columns
    text = f"A seeded sample of test examples that {chosen.name} (recommended)"
    if side and neighbour is not None:
        text += (
            f" or its cheaper neighbour on the front, {neighbour.name}, got wrong. Examples only "
            "the cheaper model got wrong come first: they are what the extra cost bought."
        )
    else:
        text += " got wrong."
    headers = ["text", "true", f"{chosen.name} (confidence)"]
    headers += [f"{neighbour.name} (confidence)"] if side and neighbour is not None else []
    rows = []
    for r in sample.to_dict("records"):
        row = [
            _shorten(str(r["text"])),
            str(r["true"]),
            _guess(r["chosen"], r["chosen_confidence"]),
        ]
        if side:
            row.append(_guess(r["neighbour"], r["neighbour_confidence"]))
        rows.append(row)
    return [*head, ("p", text), ("table", (headers, rows))]


def _guess(label: Any, confidence: Any) -> str:
    return f"{label} ({confidence:.2f})" if isinstance(confidence, float) else str(label)


def _method(report: Report) -> list[Block]:
    o = report.options
    run = f"parent MLflow run `{report.parent_run_id}`" if report.parent_run_id else "no MLflow run"
    items = [
        "Pareto front: trials no other trial beats on both test accuracy and cost.",
        "Paired tests on the same test examples: exact McNemar (two-sided binomial test on the "
        f"examples only one model gets right) and a {o.n_resamples:,}-resample paired bootstrap "
        f"interval (seed {o.seed}).",
        "Examples needed: Connor's normal approximation for McNemar at alpha "
        f"{o.alpha:g} and power {o.power:g}, at the observed disagreement rate (roughly).",
        f"Study `{report.study}`, backend `{report.backend}`, tracking `{report.tracking_uri}`, "
        f"{run}.",
    ]
    return [("h2", "Method"), ("list", items)]


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_files(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write every file of the report into `out_dir` (which exists) and return them by name."""
    paths = {
        "chart": out_dir / IMAGES["chart"],
        "epochs": out_dir / IMAGES["epochs"],
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
        "trials": out_dir / "trials.csv",
    }
    accuracy_cost_png(report, paths["chart"])
    epochs_png(report, paths["epochs"])
    items = blocks(report)
    paths["markdown"].write_text(to_markdown(items), encoding="utf-8")
    images = {p.name: p for p in (paths["chart"], paths["epochs"])}
    paths["html"].write_text(to_html(items, report, images), encoding="utf-8")
    trials_frame(report).to_csv(paths["trials"], index=False)
    return paths

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

from harness.report._compare_sections import compared_studies
from harness.report.answer import (
    answer_lines,
    cost_basis,
    step_verdict,
    synthetic_lines,
    versus_verdict,
    walk_text,
)
from harness.report.charts import accuracy_cost_png, cost_name, epochs_png
from harness.report.formats import IMAGES, Block, p_text, percent, points, ratio, usd
from harness.report.markup import to_html, to_markdown
from harness.report.model import Report, TrialRow
from harness.report.sections import HOURS_PER_MONTH

PARAM_ORDER = ("n_epochs", "learning_rate_multiplier", "batch_size", "train_examples", "base_model")


# --- sections --------------------------------------------------------------------------------


def blocks(report: Report) -> list[Block]:
    """The whole report as blocks, in reading order."""
    answer = answer_lines(report)
    result: list[Block] = [
        ("h1", f"{report.study}: which fine-tuning setup is worth paying for?"),
        *[("p", f"**{line}**") for line in synthetic_lines(report)],
        ("p", f"**Answer:** {answer[0].removeprefix('Answer: ')}"),
        *[("p", line) for line in answer[1:]],
        *[("p", f"Note: {note}") for note in report.notes],
        # The one chart right under the answer: with it, the answer reads on one screen; the
        # tables follow (folded in the HTML where wide).
        (
            "chart",
            (IMAGES["chart"], f"Validation accuracy against {cost_name(report)}"),
        ),
    ]
    sections = (compared_studies, _front, _baselines, _trials, _epochs, _ownership)
    for section in (*sections, _qualitative, _method):
        result += section(report)
    return result


def _front(report: Report) -> list[Block]:
    index = {id(r): i for i, r in enumerate(report.front)}
    rows = [
        [
            f"{s.cheaper.name} -> {s.dearer.name}",
            f"{percent(s.cheaper.selection_accuracy)} -> {percent(s.dearer.selection_accuracy)}",
            points(s.gain_points),
            ratio(s.cost_ratio),
            usd(s.extra_cost),
            usd(s.dollars_per_point),
            p_text(s.valid.p_value) if s.valid else "-",
            f"{s.valid.alpha:.2g}" if s.valid else "-",
            f"{100 * s.valid.low:+.1f}" if s.valid else "-",
            step_verdict(s.valid),
            _walk_cell(report, index[id(s.dearer)]),
            f"{percent(s.cheaper.accuracy)} -> {percent(s.dearer.accuracy)}",
        ]
        for s in report.steps
    ]
    year = "first-year " if report.options.weigh_running else ""
    headers = ["step", "validation accuracy", "gain", f"{year}cost ratio", f"extra {year}cost"]
    headers += ["$ per point"]
    headers += ["one-sided p", "tested at", "gain at least (points)", "verdict", "the walk"]
    headers += ["test accuracy (not tested)"]
    o = report.options
    intro = (
        "Each step moves to the next dearer member of the Pareto front of validation accuracy "
        f"against {cost_basis(o)} (baselines included). A gain is shown when a one-sided "
        "paired test on "
        f"the {report.n_valid or 'unknown number of'} validation examples rejects "
        f'"no better" at {o.alpha:g} shared among the candidates dearer than the cheaper end '
        '(the step was picked from them): "tested at"; "gain at least" is the matching lower '
        "bound: a claim, with family-wise error control. The walk (see the method) chooses by "
        "expected value among what it could buy, so it may buy a step whose gain alone is not "
        "shown: its column says what it did. Test accuracies are shown, not tested: the test "
        "set checks only the chosen model, once (see the answer)."
    )
    table: list[Block] = (
        [("table", (headers, rows))] if rows else [("p", "The front has one member: no steps.")]
    )
    return [
        ("h2", "Steps along the Pareto front"),
        ("p", intro),
        *table,
    ]


def _walk_cell(report: Report, index: int) -> str:
    return walk_text(report, report.front[index])


def _baselines(report: Report) -> list[Block]:
    rows = [
        [
            b.name,
            percent(b.valid_accuracy) if b.valid_accuracy is not None else "-",
            percent(b.accuracy) if b.accuracy is not None else "-",
            f"{b.macro_f1:.3f}" if b.macro_f1 is not None else "-",
            usd(b.cost),
            b.note,
        ]
        for b in report.baselines
    ]
    headers = ["baseline", "validation accuracy", "test accuracy", "macro F1", "cost", "note"]
    text = (
        "Scored on the same validation and test examples as the trials; the scored ones are "
        "members of the front like any trial, so the answer can be not to fine-tune."
    )
    return [
        ("h2", "Baselines on the same data"),
        ("p", text),
        ("table", (headers, rows)),
    ]


def _param_names(trials: list[TrialRow]) -> list[str]:
    names = {k for t in trials for k in t.params}
    return [n for n in PARAM_ORDER if n in names] + sorted(names - set(PARAM_ORDER))


def trials_frame(report: Report) -> pd.DataFrame:
    """One row per completed trial: hyperparameters, epochs run, validation and test scores,
    cost, time, and the validation gain over the best baseline."""
    best = report.best_baseline
    records = []
    for t in report.trials:
        cmp = report.baseline_comparisons.get(t.number)
        record = t.record
        kind = (
            f"checkpoint of trial {record.checkpoint_of}"
            if record.is_checkpoint
            else "stopped early"
            if record.stopped_early
            else ""
        )
        records.append(
            {
                **(t.origin.columns() if t.origin is not None else {}),
                "trial": t.trial_number,
                "front": "yes" if t.on_front else "",
                "kind": kind,
                **{n: t.params.get(n, "") for n in _param_names(report.trials)},
                "epochs_run": record.epochs_run,
                "valid_accuracy": t.valid_accuracy,
                "test_accuracy": t.accuracy,
                "macro_f1": record.test_macro_f1,
                "weighted_f1": record.test_weighted_f1,
                "mae": record.test_mae,
                "cost_usd": t.cost,
                "wall_seconds": record.wall_seconds,
                "vs_best_baseline_points": 100 * cmp.difference if cmp and best else None,
                "vs_best_baseline": versus_verdict(cmp),
            }
        )
    return pd.DataFrame.from_records(records)


def _cell(value: Any, column: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column == "cost_usd":
        return usd(float(value))
    if column in ("valid_accuracy", "test_accuracy"):
        return percent(float(value))
    if column == "vs_best_baseline_points":
        return f"{float(value):+.1f}"
    if column in ("wall_seconds", "epochs_run"):
        return f"{float(value):.0f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trials(report: Report) -> list[Block]:
    frame = trials_frame(report)
    if "mae" in frame and frame["mae"].isna().all():  # labels not ordinal: no distance
        frame = frame.drop(columns="mae")
    rows = [[_cell(v, c) for c, v in row.items()] for row in frame.to_dict("records")]
    best = report.best_baseline
    intro = (
        f"Gains are in validation points against the best baseline ({best.name}), two-sided at "
        f"{report.options.alpha:g}; a checkpoint shows the epochs it ran, and its seconds are "
        "those of scoring it (its training was its parent's)."
        if best
        else "No baseline was scored."
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
            "accuracy: that is where another epoch stops paying. This is the accuracy the front "
            "and its steps are judged on, so where a trial's epoch checkpoints were scored, the "
            "epochs after its peak are dominated there too."
        )
    elif all(e.epochs < 2 for e in report.epochs):
        text = "Every trial ran one epoch: the curves cannot say whether another would pay."
    else:
        text = "Every trial was still improving at its last epoch: another epoch may still pay."
    rows = [
        [
            report.name_of(e.number),
            str(e.epochs),
            str(e.peak_epoch),
            percent(e.peak_accuracy),
            percent(e.last_accuracy),
            usd(e.cost_after_peak),
        ]
        for e in report.epochs
    ]
    headers = ["trial", "epochs run", "peak epoch", "peak validation accuracy"]
    headers += ["last epoch's validation accuracy", "cost after the peak"]
    return [
        ("h2", "Per-epoch curves"),
        ("p", text),
        ("image", (IMAGES["epochs"], "Validation accuracy and cost by epoch")),
        ("table", (headers, rows)),
    ]


def _ownership(report: Report) -> list[Block]:
    n = report.options.monthly_requests
    front = {t.number for t in report.front}
    hosted = any(o.hosting_per_month is not None for o in report.ownership)
    rows = []
    for o in sorted(report.ownership, key=lambda o: (o.number not in front, o.number)):
        row = [report.name_of(o.number), "yes" if o.number in front else "", usd(o.training)]
        row.append(usd(o.per_request * 1000 if o.per_request is not None else None))
        row += [usd(o.hosting_per_month)] if hosted else []
        rows.append([*row, usd(o.monthly), usd(o.months(1)), usd(o.months(12))])
    basis = (
        f"the trial's test-set evaluation cost / {report.n_test:,} test examples"
        if report.n_test
        else "not known (no test-set size)"
    )
    text = (
        f"Training once, then serving {n:,} requests a month. Inference per request = {basis}; "
        "a checkpoint is the same model an epoch earlier and runs at its parent's cost per "
        "request."
    )
    if hosted:
        text += (
            " A deployed model billed by the hour (an Azure OpenAI deployment, a Together "
            "dedicated endpoint) is paid for every hour it exists, called or not: its hosting "
            "is taken out of the evaluation cost before "
            f"the per-request price, and counted as a month of it ({HOURS_PER_MONTH:g} hours at "
            "the hourly rate the evaluation paid) in the monthly cost."
        )
    headers = ["trial", "front", "training", "per 1,000 requests"]
    headers += ["hosting / month"] if hosted else []
    headers += [f"per month ({n:,})", "first month", "first year"]
    return [("h2", "Total cost of ownership"), ("p", text), ("table", (headers, rows))]


def _qualitative(report: Report) -> list[Block]:
    rec, neighbour, sample = report.recommendation, report.neighbour, report.sample
    chosen = rec.fine_tuned if rec.chosen.is_baseline and rec.fine_tuned else rec.chosen
    head: list[Block] = [("h2", "Misclassified examples")]
    if sample.empty:
        text = f"No misclassified examples to show for {chosen.name} (or no predictions)."
        return [*head, ("p", text)]
    side = neighbour is not None and "neighbour" in sample.columns
    role = "recommended" if chosen is rec.chosen else "the fine-tuned choice"
    text = f"A seeded sample of test examples that {chosen.name} ({role})"
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
        "Choose on validation, confirm on test. The study optimises validation accuracy (of the "
        "model each trial delivered) and cost; the Pareto front here is every model, baselines "
        f"included, that no other beats on both {report.selected_on} accuracy and cost. Test "
        "accuracies are shown for every model and are unbiased because nothing was chosen on "
        "them (choosing on test overstates the winner by about a point).",
        "The walk (paired on the validation examples every model was scored on, where each "
        "recorded which it got right): every fine-tuned candidate's expected accuracy is "
        "corrected for having picked the best of many on the same data (empirical Bayes: they "
        "tie at their pooled mean until they are shown to differ; then those shown worse than "
        "the best drop out and each of the rest is shrunk towards their mean by how much of "
        "its spread is noise). From the cheapest front member the walk takes the most "
        "valuable member within reach (with a value per point: value x expected gain - extra "
        "cost; otherwise the expected accuracy) and buys it over the most valuable cheaper "
        "alternative when its advantage is shown: among candidates shown to differ the "
        "expected values decide; where a tie is plausible a one-sided paired test at alpha "
        f"{o.alpha:g}, shared among the candidates dearer than that alternative (Bonferroni), "
        "must pass. Otherwise it looks again below. So a dearer model that is no better, picked "
        "from many, is bought in at most about alpha of sweeps at any value per point, while a "
        "gain that is shown and worth its price is bought; two fine-tuned candidates alone are "
        "one comparison, decided on its expected value. Without a value or a budget (the knee "
        "mode) the walk steps to the cheapest member up to the knee whose paired gain over where "
        "it stands passes that test (or, for an extra cost of at most 5%, whose expected "
        "accuracy is higher), and again from there. "
        + (
            f"The choice weighs the gain's {o.risk:g} quantile, not its mean. "
            if o.risk != 0.5
            else ""
        )
        + (
            "The front, its knee, its steps and the choice weigh each model's first-year cost "
            f"of ownership at {o.monthly_requests:,} requests a month, hosting included."
            if o.weigh_running
            else ""
        ),
        "The test set is read once for a decision: exact McNemar (two-sided binomial test on the "
        f"examples only one model gets right) and a {o.n_resamples:,}-resample paired bootstrap "
        f"interval (seed {o.seed}) of the chosen model against the model it was chosen over, "
        "named by the walk before the test set is read.",
        "Examples needed: the normal approximation of the validation test at alpha "
        f"{o.alpha:g} and power {o.power:g}, at the observed spread per example (roughly).",
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

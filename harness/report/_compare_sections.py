"""The sections only a comparison across studies has: the studies compared, and who is who on
the front (experiment, backend, base model of every member)."""

from __future__ import annotations

from harness.report.formats import Block, percent, usd
from harness.report.model import Report, TrialRow


def compared_studies(report: Report) -> list[Block]:
    """Per study: what it tried and how it placed; then every front member with its origin.
    Nothing for a report on one study (its rows have no `origin`)."""
    studies: dict[str, list[TrialRow]] = {}
    for row in report.trials:
        if row.origin is not None:
            studies.setdefault(row.origin.experiment, []).append(row)
    if not studies:
        return []
    rows = []
    for name, trials in studies.items():
        origin = trials[0].origin
        assert origin is not None  # grouped by it above
        best = max(trials, key=lambda t: (t.selection_accuracy, -t.cost))
        rows.append(
            [
                name,
                origin.backend,
                origin.model,
                str(len(trials)),
                str(sum(t.on_front for t in trials)),
                f"{percent(best.selection_accuracy)} ({percent(best.accuracy)})",
                f"{usd(min(t.cost for t in trials))} to {usd(max(t.cost for t in trials))}",
            ]
        )
    headers = ["experiment", "backend", "base model", "trials and checkpoints", "on the front"]
    headers += ["best validation (its test) accuracy", "cost per trial"]
    baselines = report.candidates - len(report.trials)
    intro = (
        f"One Pareto front across {len(studies)} studies on the same data, of "
        f"{report.candidates} candidates: every completed trial and checkpoint of each "
        f"({len(report.trials)}), plus the baselines once ({baselines}), judged by one walk "
        "(every candidate of every study counts in its selection correction and its families), "
        "and checked once on the same test examples."
    )
    return [
        ("h2", "Studies compared"),
        ("p", intro),
        ("table", (headers, rows)),
        ("h2", "Who is on the front"),
        ("table", _members(report)),
    ]


def _members(report: Report) -> tuple[list[str], list[list[str]]]:
    chosen = report.recommendation.chosen
    headers = ["front member", "experiment", "backend", "base model", "setup"]
    year = report.options.weigh_running  # the front was formed on the first year's cost
    headers += ["validation accuracy", "test accuracy", "cost"]
    headers += ["first-year cost"] if year else []
    rows = []
    for row in report.front:
        o = row.origin
        where = [o.experiment, o.backend, o.model] if o is not None else ["baseline", "-", "-"]
        mark = " (the answer)" if row is chosen else ""
        rows.append(
            [
                row.name + mark,
                *where,
                row.describe(),
                percent(row.selection_accuracy),
                percent(row.accuracy),
                usd(row.cost),
                *([usd(row.weighed_cost)] if year else []),
            ]
        )
    return headers, rows

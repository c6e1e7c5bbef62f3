"""The report's charts: accuracy against cost (PNG, and inline SVG for the HTML) and per-epoch
curves (PNG).

The SVG is hand-written rather than drawn by a plotting library so the HTML report stays one
self-contained file with no JavaScript bundle: each point carries a `<title>`, which browsers show
as a tooltip on hover. Axis ticks come from matplotlib's locators so both charts agree.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.report.formats import percent, usd
from harness.report.model import Report, TrialRow
from harness.report.sections import epoch_numbers

_FRONT, _OTHER, _CHOSEN, _BASE = "#1f77b4", "#b0b0b0", "#d62728", "#2ca02c"


# --- charts --------------------------------------------------------------------------------


def use_log_cost(costs: Sequence[float]) -> bool:
    """Log scale when every cost is positive and they span more than a factor of 3."""
    return bool(costs) and min(costs) > 0 and max(costs) / min(costs) > 3


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tooltip(report: Report, row: TrialRow) -> str:
    where = "Pareto front" if row.on_front else "dominated"
    chosen = " (recommended)" if row is report.recommendation.chosen else ""
    valid = f"validation {percent(row.valid_accuracy)}, " if row.valid_accuracy is not None else ""
    year = row.decision_cost
    first = f", first year {usd(year)}" if year is not None else ""
    score = f"{valid}test {percent(row.accuracy)}, cost {usd(row.cost)}{first}"
    return f"{row.name}{chosen}, {where}\n{row.describe()}\n{score}"


def _y(row: TrialRow) -> float:
    """What the chart's vertical axis shows: the accuracy the front is formed on, in percent."""
    return 100 * row.selection_accuracy


def _plotted(report: Report) -> tuple[list[TrialRow], bool]:
    """The front members the cost axis can show (a free baseline has no place on a log scale;
    its dashed line shows it), and whether that axis is logarithmic."""
    log = use_log_cost([t.weighed_cost for t in report.trials])
    return [r for r in report.front if r.weighed_cost > 0 or not log], log


def accuracy_cost_png(report: Report, path: Path) -> None:
    """Scatter of validation accuracy against cost, front joined, recommendation ringed,
    baselines as dashed lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    others = [t for t in report.trials if not t.on_front]
    ax.scatter(
        [t.weighed_cost for t in others], [_y(t) for t in others], c=_OTHER, label="other trials"
    )
    front, log = _plotted(report)
    ax.plot(
        [t.weighed_cost for t in front],
        [_y(t) for t in front],
        "o-",
        c=_FRONT,
        label="Pareto front",
    )
    for i, t in enumerate(front):
        # Neighbours on the front are often close: alternate below and above so labels such as
        # t5 and t6 do not print over each other.
        below = i % 2 == 0
        ax.annotate(
            t.short,
            (t.weighed_cost, _y(t)),
            textcoords="offset points",
            xytext=(5, -12 if below else 6),
            fontsize=8,
        )
    chosen = report.recommendation.chosen
    if chosen in front:
        ax.scatter(
            [chosen.weighed_cost],
            [_y(chosen)],
            s=220,
            facecolors="none",
            edgecolors=_CHOSEN,
            linewidths=2,
            label="recommended",
        )
    _draw_baselines(ax, report, named={t.name for t in front if t.is_baseline})
    if log:
        ax.set_xscale("log")
    percent_axis(ax)
    ax.set_xlabel(cost_axis(report))
    ax.set_ylabel(f"{report.selected_on} accuracy (%)")
    title = f"{report.study}: {report.selected_on} accuracy against {cost_name(report)}"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost_name(report: Report) -> str:
    """`first-year cost` where the front was formed on it, else `cost`."""
    return "first-year cost" if report.options.weigh_running else "cost"


def cost_axis(report: Report) -> str:
    """What the cost axis shows: the cost the front was formed on."""
    o = report.options
    if o.weigh_running:
        return (
            "first-year cost per configuration (US dollars: training + 12 months of "
            f"{o.monthly_requests:,} requests, hosting included)"
        )
    return "cost per configuration (US dollars: training + test evaluation)"


def percent_axis(ax: Any) -> None:
    """An accuracy axis never runs past 100% (matplotlib's margin drew it to 105%)."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(max(bottom, 0.0), min(top, 101.0))


def _draw_baselines(ax: Any, report: Report, named: set[str]) -> None:
    """A dashed line per scored baseline, named at its left end unless its point on the front
    (`named`: the baselines whose points are labelled) says it already: two labels of one
    model near the axis printed over each other."""
    for base in report.baselines:
        if base.accuracy is not None:
            ax.axhline(100 * base.selection_accuracy, ls="--", lw=1, c=_BASE)
            if base.name in named:
                continue
            ax.annotate(
                base.name,
                (0.01, 100 * base.selection_accuracy),
                xycoords=("axes fraction", "data"),
                fontsize=8,
                color=_BASE,
                va="bottom",
            )


def epochs_png(report: Report, path: Path) -> None:
    """Validation accuracy and cumulative cost by epoch, one line per trial, front in colour."""
    plt = _pyplot()
    fig, (acc_ax, cost_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for t in report.trials:
        curve = t.record.valid_accuracy_by_epoch
        costs = t.record.cost_usd_by_epoch
        style = {
            "c": None if t.on_front else _OTHER,
            "lw": 1.8 if t.on_front else 1,
            "marker": "o",
            "ms": 3,
        }
        label = t.short if t.on_front else None
        epochs = epoch_numbers(t.record)  # a remote job's curve: its last epochs only
        if curve:
            acc_ax.plot(epochs, [100 * v for v in curve], label=label, **style)
        if costs and len(costs) == len(epochs):
            cost_ax.plot(epochs, costs, **style)
    acc_ax.set(
        xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy by epoch"
    )
    percent_axis(acc_ax)
    cost_ax.set(xlabel="epoch", ylabel="cost so far (US dollars)", title="cost by epoch")
    epoch_costs = [float(c) for t in report.trials for c in t.record.cost_usd_by_epoch]
    if use_log_cost(epoch_costs):
        cost_ax.set_yscale("log")
    for ax in (acc_ax, cost_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if any(t.on_front for t in report.trials):
        acc_ax.legend(fontsize=8, title="front", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _Axis:
    """Maps data to SVG pixels on a linear or log scale, with matplotlib's tick positions."""

    def __init__(self, values: Sequence[float], pixels: tuple[float, float], log: bool):
        from matplotlib.ticker import LogLocator, MaxNLocator

        self.log, self.pixels = log, pixels
        low, high = (
            (math.log10(min(values)), math.log10(max(values)))
            if log
            else (min(values), max(values))
        )
        pad = (high - low) * 0.08 or (0.3 if log else max(abs(low) * 0.1, 0.01))
        self.low, self.high = low - pad, high + pad
        if log:
            ticks = LogLocator(base=10, subs=(1.0, 2.0, 5.0)).tick_values(
                10**self.low, 10**self.high
            )
        else:
            ticks = MaxNLocator(6).tick_values(self.low, self.high)
        self.ticks = [float(t) for t in ticks if self.low <= self._raw(t) <= self.high]

    def _raw(self, value: float) -> float:
        return math.log10(value) if self.log else value

    def __call__(self, value: float) -> float:
        start, end = self.pixels
        return start + (self._raw(value) - self.low) / (self.high - self.low) * (end - start)


def _el(tag: str, body: str = "", **attrs: object) -> str:
    """One SVG element; `stroke_width=2` becomes `stroke-width="2"`, floats get one decimal."""
    names = {"class_": "class"}
    text = " ".join(
        f'{names.get(k, k.replace("_", "-"))}="{f"{v:.1f}" if isinstance(v, float) else v}"'
        for k, v in attrs.items()
    )
    opening = f"{tag} {text}" if text else tag
    return f"<{opening}>{body}</{tag}>" if body else f"<{opening}/>"


def accuracy_cost_svg(report: Report, width: int = 760, height: int = 430) -> str:
    """The accuracy-against-cost chart as inline SVG; hover a point for its configuration."""
    box = (70, width - 20, 34, height - 50)  # legend above the plot area
    left, right, top, bottom = box
    front, log = _plotted(report)
    costs = [t.weighed_cost for t in report.trials] + [t.weighed_cost for t in front]
    scored = [b for b in report.baselines if b.accuracy is not None]
    accs = [_y(t) for t in report.trials] + [100 * b.selection_accuracy for b in scored]
    x = _Axis(costs, (left, right), log)
    y = _Axis(accs, (bottom, top), log=False)
    label_x = f"{cost_name(report)} per configuration, US dollars"
    parts = _svg_axes(x, y, box, f"{report.selected_on} accuracy", label_x)
    named = {t.name for t in front if t.is_baseline}  # a point on the front is labelled beside it
    for base in scored:
        yy = y(100 * base.selection_accuracy)
        parts.append(
            _el("line", x1=left, x2=right, y1=yy, y2=yy, stroke=_BASE, stroke_dasharray="5,4")
        )
        if base.name not in named:
            parts.append(_el("text", html.escape(base.name), x=left + 4, y=yy - 4, fill=_BASE))
    line = " ".join(f"{x(t.weighed_cost):.1f},{y(_y(t)):.1f}" for t in front)
    parts.append(_el("polyline", points=line, fill="none", stroke=_FRONT, stroke_width=1.5))
    chosen = report.recommendation.chosen
    ring: dict[str, object] = {"r": 11, "fill": "none", "stroke": _CHOSEN, "stroke_width": 2}
    if chosen in front:
        parts.append(_el("circle", "", cx=x(chosen.weighed_cost), cy=y(_y(chosen)), **ring))
    points = [*report.trials, *(r for r in front if r.is_baseline)]
    place = {id(t): i for i, t in enumerate(front)}
    for t in sorted(points, key=lambda t: t.on_front):  # front drawn on top
        cx, cy = x(t.weighed_cost), y(_y(t))
        tip = _el("title", html.escape(_tooltip(report, t)))
        colour = _BASE if t.is_baseline else _FRONT if t.on_front else _OTHER
        parts.append(_el("circle", tip, class_="pt", cx=cx, cy=cy, r=6, fill=colour))
        if t.on_front:  # neighbours alternate below and above, so close labels stay apart
            below = place.get(id(t), 0) % 2 == 0
            label = html.escape(t.short)
            parts.append(_el("text", label, x=cx + 8, y=cy + 14 if below else cy - 8))
    parts.append(_legend(right, top))
    body = "\n".join(parts)
    return _el(
        "svg",
        f"\n{body}\n",
        viewBox=f"0 0 {width} {height}",
        width=width,
        height=height,
        role="img",
        aria_label=f"{report.selected_on} accuracy against {cost_name(report)}",
        font_family="sans-serif",
        font_size=11,
    )


def _legend(right: float, top: float) -> str:
    legend = [
        (_FRONT, "● Pareto front"),
        (_OTHER, "● other trials"),
        (_CHOSEN, "○ recommended"),
        (_BASE, "● - - baselines"),
    ]
    spans = "  ".join(_el("tspan", text, fill=colour) for colour, text in legend)
    return _el("text", spans, x=right, y=top - 12, text_anchor="end")


def _svg_axes(
    x: _Axis, y: _Axis, box: tuple[int, int, int, int], label_y: str, label_x: str
) -> list[str]:
    left, right, top, bottom = box
    frame = {"fill": "none", "stroke": "#999"}
    parts = [_el("rect", x=left, y=top, width=right - left, height=bottom - top, **frame)]
    for tick in x.ticks:
        xx = x(tick)
        parts.append(_el("line", x1=xx, x2=xx, y1=top, y2=bottom, stroke="#eee"))
        parts.append(_el("text", usd(tick), x=xx, y=bottom + 16, text_anchor="middle"))
    for tick in y.ticks:
        yy = y(tick)
        parts.append(_el("line", x1=left, x2=right, y1=yy, y2=yy, stroke="#eee"))
        parts.append(_el("text", f"{tick:g}%", x=left - 6, y=yy + 4, text_anchor="end"))
    label = label_x + (" (log scale)" if x.log else "")
    middle = {"text_anchor": "middle"}
    parts.append(_el("text", label, x=(left + right) / 2, y=bottom + 38, **middle))
    vertical = {"transform": "rotate(-90)", "x": -(top + bottom) / 2, "y": 16, **middle}
    parts.append(_el("text", label_y, **vertical))
    return parts

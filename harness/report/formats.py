"""Numbers in words for the report (dollars, points, ratios, p-values) and its document blocks."""

from __future__ import annotations

import math
from typing import Any

from harness.records import usd as usd  # the one dollar format, beside `Cost`

# A document is a list of blocks: ("h1" | "h2" | "p", text), ("list", [text]),
# ("table", (headers, rows)), ("image", (png name, alt)) and ("chart", (png name, alt)): the
# accuracy-against-cost chart, a PNG in markdown and an interactive SVG in HTML.
Block = tuple[str, Any]
IMAGES = {"chart": "accuracy_vs_cost.png", "epochs": "epoch_curves.png"}


# --- numbers in words ------------------------------------------------------------------------


def points(value: float) -> str:
    """A signed difference in accuracy points, e.g. `+1.5 points`."""
    return f"{value:+.1f} points"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def chance(probability: float) -> str:
    """`59%`; a normal posterior is never certain, so `over 99%` / `under 1%` where rounding
    would print 100% or 0%."""
    if probability >= 0.995:
        return "over 99%"
    if probability < 0.005:
        return "under 1%"
    return f"{probability:.0%}"


def ratio(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"


def p_text(p_value: float) -> str:
    return (
        "p < 0.001"
        if p_value < 0.001
        else f"p = {p_value:.3f}"
        if p_value < 0.1
        else f"p = {p_value:.2f}"
    )

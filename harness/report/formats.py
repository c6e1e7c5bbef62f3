"""Numbers in words for the report (dollars, points, ratios, p-values) and its document blocks."""

from __future__ import annotations

import math
from typing import Any

# A document is a list of blocks: ("h1" | "h2" | "p", text), ("list", [text]),
# ("table", (headers, rows)), ("image", (png name, alt)) and ("chart", (png name, alt)): the
# accuracy-against-cost chart, a PNG in markdown and an interactive SVG in HTML.
Block = tuple[str, Any]
IMAGES = {"chart": "accuracy_vs_cost.png", "epochs": "epoch_curves.png"}


# --- numbers in words ------------------------------------------------------------------------


def usd(value: float | None) -> str:
    """Dollars to three significant digits below $1 (`$0.0123`, `$0.10`), cents above (`$12.34`)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "$0"
    if value < 0:
        return f"-{usd(-value)}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    decimals = max(2, -math.floor(math.log10(abs(value))) + 2)
    text = f"{value:.{decimals}f}"
    # Three significant digits, but no trailing zeros beyond the cents: $0.10, $0.196, $0.005.
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction[:2]}{fraction[2:].rstrip('0')}"


def points(value: float) -> str:
    """A signed difference in accuracy points, e.g. `+1.5 points`."""
    return f"{value:+.1f} points"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


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

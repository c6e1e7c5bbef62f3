"""Markdown and self-contained HTML from one list of document blocks, so both say the same."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from harness.data.summary import md_cell
from harness.report.charts import accuracy_cost_svg
from harness.report.formats import Block
from harness.report.model import Report

# --- markdown and HTML -----------------------------------------------------------------------

FOLD_COLUMNS = 6  # an HTML table wider than this is folded under a summary line


def to_markdown(items: list[Block]) -> str:
    out: list[str] = []
    for kind, value in items:
        if kind in ("h1", "h2"):
            out.append(f"{'#' if kind == 'h1' else '##'} {value}")
        elif kind == "p":
            out.append(value)
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in value))
        elif kind in ("image", "chart"):
            out.append(f"![{value[1]}]({value[0]})")
        elif kind == "table":
            headers, rows = value
            lines = [_md_row(headers), "|" + "---|" * len(headers)] + [_md_row(r) for r in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _md_row(cells: list[str]) -> str:
    # Cells hold user data (test texts, labels, model names): the markdown must read as the
    # characters the HTML shows.
    return "| " + " | ".join(md_cell(str(c)) for c in cells) + " |"


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


_CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px;display:block;max-width:100%;
overflow-x:auto}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3} img{max-width:100%} code{font-size:13px}
.pt{cursor:pointer} .pt:hover{stroke:#000;stroke-width:2.5}
summary{cursor:pointer;color:#555;margin:.5em 0}
"""


def to_html(items: list[Block], report: Report, images: dict[str, Path]) -> str:
    body: list[str] = []
    for kind, value in items:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline(value)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(value)}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
        elif kind == "chart":
            body.append(accuracy_cost_svg(report))  # interactive: hover a point for its details
        elif kind == "image":
            data = base64.b64encode(images[value[0]].read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(value[1])}" src="data:image/png;base64,{data}">')
        elif kind == "table":
            headers, rows = value
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                for r in rows
            )
            table = f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"
            if len(headers) > FOLD_COLUMNS:  # wide: folded, so the answer and chart lead
                table = (
                    f"<details><summary>the table: {len(rows)} rows, {len(headers)} columns"
                    f"</summary>{table}</details>"
                )
            body.append(table)
    title = html.escape(f"{report.study}: report")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )

"""The report, the fourth stage: is paying more for fine-tuning buying real accuracy?

Entry point: `build_report` (then `write_report`, `log_report`). Modules: `model` (what a report
is made of), `build` (gather the study and predictions, analyse), `front` (Pareto steps and the
recommendation), `significance` (paired tests), `baselines`, `render`, `charts`, `markup` and
`formats` (the documents).
"""

from __future__ import annotations

from harness.report.build import build_report, log_report, write_report

__all__ = ["build_report", "log_report", "write_report"]

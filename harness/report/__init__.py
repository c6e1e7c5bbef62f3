"""The report, the fourth stage: is paying more for fine-tuning buying real accuracy?

Entry point: `build_report` (then `write_report`, `log_report`). Modules: `model` (what a report
is made of), `build` (gather the study and predictions, analyse), `decide` (the decision rule:
the walk along the validation front), `front` (steps, the recommendation and its one test-set
check), `significance` (paired tests on test, unpaired on validation), `baselines`, `sections`
(ownership, epochs, sample), `answer`, `render`, `charts`, `markup` and `formats` (the
documents).
"""

from __future__ import annotations

from harness.report.build import build_report, log_report, write_report

__all__ = ["build_report", "log_report", "write_report"]

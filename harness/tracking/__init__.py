"""Tracking: what a trial writes to the study and to MLflow, and the MLflow store it goes to.

Entry point: the `Tracker` protocol with its two implementations, `MlflowTracker` and
`NullTracker`. Modules: `record` (the one schema of a trial's keys, `TrialRecord`), `runs` (the
trackers), `reports` (what `harness report` and `harness compare` write to MLflow), `artifacts`
(predictions table, confusion matrix, classification report), `journal` (notes a backend must
find again after a crash), `store` (tracking URI, sqlite store template, the experiment's
get-or-create), `provenance` (what reproduces a run).
"""

from __future__ import annotations

from harness.tracking.runs import MlflowTracker
from harness.tracking.tracker import NullTracker, Tracker

__all__ = ["MlflowTracker", "NullTracker", "Tracker"]

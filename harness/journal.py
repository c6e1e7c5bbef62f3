"""A trial's journal: notes a backend must find again after a crash, such as a remote job id.

Notes are written to the Optuna trial (as `journal.<key>` user attributes, which Optuna copies
into the trial it queues again when a worker dies) and tagged on the trial's MLflow run, both
before the backend starts waiting on anything.
"""

from __future__ import annotations

from optuna.trial import Trial

from harness.tracking import NullTracker

PREFIX = "journal."


class TrialJournal:
    """The `harness.backends.base.Journal` of one Optuna trial and its MLflow run."""

    def __init__(self, trial: Trial, tracker: NullTracker, run_id: str | None) -> None:
        self._trial = trial
        self._tracker = tracker
        self._run_id = run_id

    def recall(self, key: str) -> str | None:
        value = self._trial.user_attrs.get(PREFIX + key)
        return str(value) if value is not None else None

    def record(self, key: str, value: str) -> None:
        self._trial.set_user_attr(PREFIX + key, value)
        self._tracker.tag(self._run_id, key, value)

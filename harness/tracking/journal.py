"""A trial's journal: notes a backend must find again after a crash, such as a remote job id.

Notes are written to the Optuna trial (as `journal.<key>` user attributes, which Optuna copies
into the trial it queues again when a worker dies) and tagged on the trial's MLflow run, both
before the backend starts waiting on anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from optuna.trial import FrozenTrial, Trial

from harness.tracking.record import MLFLOW_RUN_ID, SYNTHETIC_TAG, journal_key
from harness.tracking.tracker import Tracker


class TrialJournal:
    """The `harness.backends.base.Journal` of one Optuna trial and its MLflow run."""

    def __init__(self, trial: Trial, tracker: Tracker, run_id: str | None, study_name: str) -> None:
        self._trial = trial
        self._tracker = tracker
        self._run_id = run_id
        # Facts about this run that a backend may put in job metadata; not durable notes.
        self._facts = {MLFLOW_RUN_ID: run_id, "study_name": study_name}

    def recall(self, key: str) -> str | None:
        value = self._trial.user_attrs.get(journal_key(key), self._facts.get(key))
        return str(value) if value is not None else None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Step metrics from a remote job (its events, its result file) on the trial's run."""
        self._tracker.log_step_metrics(self._run_id, metrics, step)

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text artifact (a job's result file) on the trial's run."""
        self._tracker.log_text(self._run_id, text, artifact_file)

    def record(self, key: str, value: str) -> None:
        self._trial.set_user_attr(journal_key(key), value)
        self._tracker.tag(self._run_id, key, value)


def ran_on_a_test_server(trials: Iterable[FrozenTrial | Trial]) -> bool:
    """Whether any of these trials ran on a test server on this machine (its backend noted
    `synthetic` in the journal): their figures prove the plumbing, never a result."""
    return any(t.user_attrs.get(journal_key(SYNTHETIC_TAG)) == "true" for t in trials)

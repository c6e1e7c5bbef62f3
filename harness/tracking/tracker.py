"""The `Tracker` protocol the sweep talks to, and `NullTracker`, which records nothing (library
use, `track=False`). `MlflowTracker` (`harness.tracking.runs`) is the other implementation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from harness.records import EpochResult, PreparedData, TrialResult, TrialSpec


class Tracker(Protocol):
    """Where a sweep records its study and trials.

    Run ids are the tracker's own (None from a tracker that records nothing); every method taking
    a `run_id` accepts None and then does nothing.

    Thread safety:
        The sweep's main thread calls `start_study`, `start_trial`, `finish_trial`,
        `fail_trial`, `mark_pareto` and `finish_study`. Trial worker threads (remote backends)
        call `log_epoch`, `tag`, `log_step_metrics` and `log_text`, each for their own trial's
        run only, concurrently with each other and with the main thread. Implementations must
        allow that; `MlflowTracker` does, through one `MlflowClient` with explicit run ids.
    """

    def start_study(
        self, study_name: str, search_space: dict[str, Any], run_id: str | None = None
    ) -> str | None:
        """Open the study's parent run: reopen `run_id` (or the one the tracker was given) when
        it exists (a resumed study, another worker's), else create it."""
        ...

    def start_trial(
        self,
        spec: TrialSpec,
        backend: str,
        name: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> str | None:
        """Open a trial's child run with its params and any metrics known up front."""
        ...

    def log_epoch(self, run_id: str | None, epoch: EpochResult) -> None:
        """One epoch's validation accuracy, losses and cost so far, at step = epoch."""
        ...

    def tag(self, run_id: str | None, key: str, value: str) -> None: ...

    def log_step_metrics(
        self, run_id: str | None, metrics: Mapping[str, float], step: int
    ) -> None: ...

    def log_text(self, run_id: str | None, text: str, artifact_file: str) -> None: ...

    def finish_trial(self, run_id: str | None, result: TrialResult, data: PreparedData) -> None:
        """Metrics, tags and artifacts of a finished trial; the run ends FINISHED, without a
        failure reason (a worker that took it for a dead worker's may have tagged one)."""
        ...

    def fail_trial(self, run_id: str | None, reason: str, status: str = "FAILED") -> None:
        """The run ends `status` (FAILED or KILLED) with the reason as a tag."""
        ...

    @property
    def shares_files(self) -> bool:
        """Whether the store is shared with other machines (a tracking server), so a model's
        local files must go to its run for any of them to promote it."""
        ...

    def log_model_files(self, run_id: str | None, files: Mapping[str, str]) -> None:
        """Copy a model's local files (name -> folder) to the run where `shares_files`."""
        ...

    def close_abandoned_runs(
        self,
        running: set[int],
        numbered: int | None = None,
        failed: Mapping[int, tuple[str, str]] | None = None,
    ) -> int:
        """End as KILLED the study's trial runs still RUNNING whose trial number is not in
        `running` (a worker died between opening a run and recording its id); returns how many.
        A run whose trial the study holds as failed (`failed`: number -> (reason, status); its
        worker recorded why but could not close the run, its tracking server gone) ends with
        that reason and status instead.

        A run numbered `numbered` (the study's trial count) or above is an epoch checkpoint a
        live worker is recording (its trial is added once its run is logged): it is closed only
        once older than `RECORDING_GRACE_S`."""
        ...

    def mark_pareto(self, run_ids: dict[str, bool]) -> None:
        """Tag each run `pareto=true|false` (idempotent; a run another worker is tagging at the
        same moment is tagged by one of them, never an error)."""
        ...

    def finish_study(self, artifacts: dict[str, str] | None = None) -> None:
        """Attach text artifacts to the parent run and end it (idempotent)."""
        ...


class NullTracker:
    """A tracker that records nothing."""

    def start_study(
        self, study_name: str, search_space: dict[str, Any], run_id: str | None = None
    ) -> str | None:
        return None

    def start_trial(
        self,
        spec: TrialSpec,
        backend: str,
        name: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> str | None:
        return None

    def log_epoch(self, run_id: str | None, epoch: EpochResult) -> None:
        pass

    def tag(self, run_id: str | None, key: str, value: str) -> None:
        pass

    def log_step_metrics(self, run_id: str | None, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_text(self, run_id: str | None, text: str, artifact_file: str) -> None:
        pass

    def finish_trial(self, run_id: str | None, result: TrialResult, data: PreparedData) -> None:
        pass

    def fail_trial(self, run_id: str | None, reason: str, status: str = "FAILED") -> None:
        pass

    @property
    def shares_files(self) -> bool:
        return False

    def log_model_files(self, run_id: str | None, files: Mapping[str, str]) -> None:
        pass

    def close_abandoned_runs(
        self,
        running: set[int],
        numbered: int | None = None,
        failed: Mapping[int, tuple[str, str]] | None = None,
    ) -> int:
        return 0

    def mark_pareto(self, run_ids: dict[str, bool]) -> None:
        pass

    def finish_study(self, artifacts: dict[str, str] | None = None) -> None:
        pass

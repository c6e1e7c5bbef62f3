"""What a sweep tells its caller: the view it reports to while running, the outcome it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from harness.backends.base import Progress
from harness.records import Cost, TrialResult, TrialSpec
from harness.sweep.study import StudyHandle

if TYPE_CHECKING:
    from harness.sweep.live import LiveView


class SweepView(Protocol):
    """Where the sweep reports what it is doing (the CLI draws it with rich).

    Attributes:
        progress: Where the backend draws a running trial's training steps.
        live: Where the live events go (each epoch, money, time left, trials skipped for
            budget; see `harness.sweep.live`): the view itself where it shows them, None where
            it does not (tests, benchmarks, library callers), so nothing is probed.
    """

    progress: Progress
    live: LiveView | None

    def sweep_started(self, study_name: str, done: int, target: int) -> None: ...

    def trial_started(self, spec: TrialSpec, estimate: Cost) -> None: ...

    def trial_finished(self, result: TrialResult) -> None: ...

    def trial_failed(self, spec: TrialSpec, reason: str) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class SweepOutcome:
    """What one `run_sweep` call did; the study itself holds the full history."""

    handle: StudyHandle
    results: list[TrialResult] = field(default_factory=list)
    failures: list[tuple[TrialSpec, str]] = field(default_factory=list)
    stopped: str | None = None
    refused: bool = False  # the provider takes no fine-tuning jobs (`stopped` says why)
    parent_run_id: str | None = None
    synthetic: bool = False

    @property
    def all_failed(self) -> bool:
        """Trials ran and every one failed: the sweep did not do its job."""
        return bool(self.failures) and not self.results

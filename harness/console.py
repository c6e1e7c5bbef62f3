"""What the CLI draws: progress bars for the sweep and for training, and the trials table."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from harness.backends.base import Progress
from harness.records import Cost, TrialResult, TrialSpec
from harness.sweep.study import pareto_numbers
from harness.tracking.record import TrialRecord


class _TrainingBar:
    """The backend-facing Progress: one bar, re-labelled for every epoch."""

    def __init__(self, bars: RichProgress):
        self._bars = bars
        self._task: TaskID | None = None

    def start(self, description: str, total: int) -> None:
        if self._task is None:
            self._task = self._bars.add_task(description, total=total)
        else:
            self._bars.reset(self._task, total=total, description=description, visible=True)

    def advance(self, steps: int = 1) -> None:
        if self._task is not None:
            self._bars.advance(self._task, steps)

    def finish(self) -> None:
        if self._task is not None:
            self._bars.update(self._task, visible=False)


class RichView:
    """Sweep progress on a rich console: a trials bar, a training bar, one line per trial."""

    def __init__(self, console: Console):
        self.console = console
        self.bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.progress: Progress = _TrainingBar(self.bars)
        self._sweep_task: TaskID | None = None

    def __enter__(self) -> RichView:
        # The bars start with the first trial, so a confirmation prompt before it stays readable.
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def sweep_started(self, study_name: str, done: int, target: int) -> None:
        if done:
            self.console.print(
                f"Resuming study [bold]{study_name}[/]: {done} of {target} trials done."
            )
        else:
            self.console.print(f"Starting study [bold]{study_name}[/]: {target} trials.")
        self.bars.start()
        self._sweep_task = self.bars.add_task("trials", total=target, completed=done)

    def trial_started(self, spec: TrialSpec, estimate: Cost) -> None:
        self.console.print(f"[dim]{spec.run_name()}  (estimate ${estimate.usd:.4f})[/]")

    def trial_finished(self, result: TrialResult) -> None:
        if self._sweep_task is not None:
            self.bars.advance(self._sweep_task)
        curve = " ".join(f"{e.valid_accuracy:.3f}" for e in result.model.epochs)
        if result.model.stopped_early:
            curve += f"; stopped: cannot reach the front in {result.spec.n_epochs} epochs"
        self.console.print(
            f"{result.spec.run_name()}  valid by epoch [{curve}]  "
            f"test acc [bold]{result.metrics.accuracy:.4f}[/]  cost ${result.total_cost.usd:.4f}  "
            f"{result.wall_seconds:.0f}s"
        )

    def trial_failed(self, spec: TrialSpec, reason: str) -> None:
        self.console.print(f"[red]{spec.run_name()} failed:[/] {escape(reason)}")

    def message(self, text: str) -> None:
        self.console.print(text)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def _epochs_cell(planned: Any, run: Any) -> str:
    # "1/3": stopped early after one of three epochs (it could not reach the front).
    if isinstance(planned, int) and isinstance(run, int) and run < planned:
        return f"{run}/{planned}"
    return "-" if planned is None else str(planned)


def trials_table(study: optuna.Study, title: str) -> Table:
    """Every trial of the study, Pareto-front members starred, best validation accuracy first.

    The front is the study's: validation accuracy (of the model each trial delivered) against
    cost. Test accuracy is shown beside it, never ranked on; `harness report` adds the
    baselines to the front and walks it to a recommendation.
    """
    front = pareto_numbers(study)
    caption = (
        "* Pareto front of validation accuracy against cost; test accuracy is reported, never "
        "chosen on. `harness report` adds the baselines and the recommendation."
    )
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column in ("#", "front", "state", "epochs", "lr mult", "batch", "train n"):
        table.add_column(column, justify="right")
    for column in ("valid acc", "test acc", "macro F1", "cost $", "seconds"):
        table.add_column(column, justify="right")

    trials = study.get_trials(deepcopy=False)  # one snapshot: other workers may add trials
    records = {t.number: TrialRecord.from_attrs(t.user_attrs) for t in trials}

    def order(t: FrozenTrial) -> tuple[int, float]:
        return (t.state != TrialState.COMPLETE, -(records[t.number].selection_accuracy or 0.0))

    for trial in sorted(trials, key=order):
        record, params = records[trial.number], trial.params
        table.add_row(
            str(trial.number),
            "*" if trial.number in front else "",
            f"ckpt of {record.checkpoint_of}" if record.is_checkpoint else trial.state.name.lower(),
            _epochs_cell(params.get("n_epochs"), record.epochs_run),
            _fmt(params.get("learning_rate_multiplier"), ".3g"),
            str(params.get("batch_size", "-")),
            str(record.train_examples or params.get("train_examples") or "all"),
            _fmt(record.selection_accuracy, ".4f"),
            _fmt(record.test_accuracy, ".4f"),
            _fmt(record.test_macro_f1, ".4f"),
            _fmt(record.cost_usd, ".5f"),
            _fmt(record.wall_seconds, ".0f"),
        )
    return table

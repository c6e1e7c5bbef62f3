"""What the CLI draws: the live sweep view (a status line with time left and money, progress
bars, a line per epoch and per trial), and the trials table."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

from harness.backends.base import Progress
from harness.locations import redact_text
from harness.records import Cost, EpochResult, TrialResult, TrialSpec, usd
from harness.sweep.live import LiveView, SweepStatus
from harness.sweep.study import pareto_numbers, worker_gone
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


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def status_text(status: SweepStatus, seconds_left: float | None, final: bool = False) -> Text:
    """The sweep's status line: trials done, time left (not once `final`), and the money
    against the budget.

    Spent is settled money (finished trials; failed ones at what they are known to have been
    billed, else at their reservation); reserved is the worst case held for running trials, or
    queued ones that resume a paid job, until they settle. No trial starts unless its own worst
    case fits in what spent and reserved leave of the budget.
    """
    budget = "none" if status.budget is None else usd(status.budget)
    text = Text(f"{status.done}/{status.target} trials", style="bold")
    if not final:
        text.append(f" · ETA {_clock(seconds_left)}")
    text.append(f" · spent {usd(status.spent)} · reserved {usd(status.reserved)}")
    text.append(f" · budget {budget}")
    return text


class _StatusLine:
    """The status line, its ETA counting down between the sweep's updates."""

    def __init__(self) -> None:
        self.status: SweepStatus | None = None
        self.deadline: float | None = None

    def update(self, status: SweepStatus) -> None:
        self.status = status
        left = status.seconds_left
        self.deadline = None if left is None else time.monotonic() + left

    def seconds_left(self) -> float | None:
        left = None if self.deadline is None else self.deadline - time.monotonic()
        return None if left is None or left < 0 else left  # overdue: its end is unknown

    def __rich__(self) -> RenderableType:
        if self.status is None:
            return Text("")
        return status_text(self.status, self.seconds_left())


class _RemainingColumn(TimeRemainingColumn):
    """Time left: the sweep's from the estimates on the trials bar (rich's own would wait for
    trials to finish at a steady pace), rich's on the training bar."""

    max_refresh = 0.2  # the sweep's ETA counts down between the sweep's updates

    def __init__(self, line: _StatusLine):
        super().__init__()
        self.line = line

    def render(self, task: Task) -> Text:
        if task.fields.get("sweep"):
            return Text(_clock(self.line.seconds_left()), style="progress.remaining")
        return super().render(task)


class _SweepBars(RichProgress):
    """The progress bars with the status line above them."""

    def __init__(self, line: _StatusLine, *columns: Any, **options: Any):
        self.line = line  # before the base class, which renders once while it starts
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterable[RenderableType]:
        if self.line.status is not None:
            yield self.line
        yield self.make_tasks_table(self.tasks)


class _Reader:
    """The sweep's output, whose reader may go: `harness sweep | tee log` stopped by Ctrl-C (the
    terminal's SIGINT ends `tee` too), a closed terminal. Writing then fails; what the sweep
    would print is dropped, so that it still settles and queues again its trials in flight."""

    def __init__(self, file: IO[str]):
        self.file = file
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.file.write(text)
            except OSError:  # EPIPE, EIO
                self._went()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.file.flush()
            except OSError:
                self._went()

    def _went(self) -> None:
        self.gone = True
        # What the file still buffers would fail again when Python flushes it at exit, with a
        # "BrokenPipeError" on stderr: the descriptor goes to /dev/null instead (Python's advice).
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.file.fileno())
            os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)  # isatty, fileno, encoding: as the file's


class RichView:
    """The live sweep view on a rich console; implements `SweepView` and `LiveView`.

    Above the bars (trials, and the running trial's training steps) a status line: trials done
    of the target, the time left (from the trials' estimates, see `harness.sweep.live`), money
    spent and reserved against the budget. Printed as they come: each trial's estimate, each
    epoch's validation accuracy, each trial's result, a trial skipped for budget and why. Rich's
    console and bars take a lock, so trial worker threads may call it.
    """

    def __init__(self, console: Console):
        self.console = console
        self.live: LiveView | None = self  # it shows the live events itself (`SweepView.live`)
        self.line = _StatusLine()
        self.bars = _SweepBars(
            self.line,
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            _RemainingColumn(self.line),
            console=console,
            transient=True,
        )
        self.progress: Progress = _TrainingBar(self.bars)
        self._sweep_task: TaskID | None = None

    def __enter__(self) -> RichView:
        # The bars start with the first trial, so a confirmation prompt before it stays readable.
        self._file = self.console._file  # None: sys.stdout as it is when printing
        self.console.file = cast(IO[str], _Reader(self.console.file))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars.live.is_started:  # stopping unstarted bars prints a blank line in a log
            self.bars.stop()
        if self.line.status is not None:  # the last status stays on the screen
            self.console.print(status_text(self.line.status, None, final=True))
        self.console._file = self._file

    def sweep_started(self, study_name: str, done: int, target: int) -> None:
        if done:
            self.console.print(
                f"Resuming study [bold]{study_name}[/]: {done} of {target} trials done."
            )
        else:
            trials = "trial" if target == 1 else "trials"
            self.console.print(f"Starting study [bold]{study_name}[/]: {target} {trials}.")
        self.bars.start()
        self._sweep_task = self.bars.add_task("trials", total=target, completed=done, sweep=True)

    def sweep_status(self, status: SweepStatus) -> None:
        before = self.line.status
        self.line.update(status)
        if self._sweep_task is not None:
            self.bars.update(self._sweep_task, completed=status.done, total=status.target)
        if not self.console.is_terminal and before is not None and before.done != status.done:
            self.console.print(status_text(status, status.seconds_left))  # logs get no live line

    def trial_started(self, spec: TrialSpec, estimate: Cost) -> None:
        self.console.print(f"[dim]{spec.run_name()}  (estimate up to {usd(estimate.usd)})[/]")

    def trial_epoch(self, spec: TrialSpec, epoch: EpochResult) -> None:
        self.console.print(
            f"  {spec.run_name()}  epoch {epoch.epoch}/{spec.n_epochs}  valid acc "
            f"[bold]{epoch.valid_accuracy:.4f}[/]  {usd(epoch.cost_so_far.usd)} so far",
            highlight=False,
        )

    def trial_finished(self, result: TrialResult) -> None:
        curve = " ".join(f"{e.valid_accuracy:.3f}" for e in result.model.epochs)
        if result.model.stopped_early:
            curve += f"; stopped: cannot reach the front in {result.spec.n_epochs} epochs"
        self.console.print(
            f"{result.spec.run_name()}  valid [{curve}]  test acc "
            f"[bold]{result.metrics.accuracy:.4f}[/]  {usd(result.total_cost.usd)}  "
            f"{result.wall_seconds:.0f}s"
        )

    def trial_failed(self, spec: TrialSpec, reason: str) -> None:
        self.console.print(f"[red]{spec.run_name()} failed:[/] {escape(redact_text(reason))}")

    def trial_skipped(self, spec: TrialSpec | None, reason: str) -> None:
        who = "next trial" if spec is None else spec.run_name()
        self.console.print(f"[yellow]{who} skipped:[/] {escape(reason)}")

    def message(self, text: str) -> None:
        self.console.print(redact_text(text))


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def _epochs_cell(planned: Any, run: Any) -> str:
    # "1/3": stopped early after one of three epochs (it could not reach the front).
    if isinstance(planned, int) and isinstance(run, int) and run < planned:
        return f"{run}/{planned}"
    return "-" if planned is None else str(planned)


def dollars(value: Any) -> str:
    """Dollars to three significant digits without an exponent: 0.00123, 0.0456, 1.23, 148;
    below a dollar the third digit is kept when it is a zero (0.000530 beside 0.000787), so a
    column reads alike down its rows."""
    if not isinstance(value, int | float):
        return "-"
    if 0 < abs(value) < 1 and math.isfinite(value):
        decimals = max(2, -math.floor(math.log10(abs(value))) + 2)
        return f"{value:.{decimals}f}"
    return usd(value).removeprefix("$")  # the column header says the unit


def duration(seconds: Any) -> str:
    """Wall time as m:ss, or h:mm:ss from an hour."""
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# (header, justify) of every column, and the order they give way in on a narrow terminal.
_COLUMNS: dict[str, JustifyMethod] = {
    "#": "right",
    "state": "left",
    "ep": "right",
    "lr": "right",
    "batch": "right",
    "n": "right",
    "valid": "right",
    "test": "right",
    "F1": "right",
    "cost $": "right",
    "time": "right",
}
_GIVE_WAY = ("time", "F1", "batch")
_LEGEND = (
    "* Pareto front of validation accuracy against cost. ep: epochs run/planned; lr: "
    "learning-rate multiplier; n: training examples; valid, test: accuracy; F1: macro-F1 on "
    "test. Test accuracy is reported, never chosen on; `harness report` adds the baselines "
    "and the recommendation."
)
# A study of one objective (validation accuracy; a cost limit a constraint) has a best trial.
_BEST = "* best validation accuracy (among the trials within the cost limit, if any)."


@dataclass
class TrialsTable:
    """The trials table, laid out when printed: as many columns as the width holds without
    cutting a number (from 80 columns on, all but `time`, `F1` and `batch` for sure)."""

    title: str
    rows: list[dict[str, str]]
    legend: str = _LEGEND

    def table(self, columns: list[str]) -> Table:
        table = Table(
            title=self.title,
            title_justify="left",
            caption=self.legend,
            caption_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1, 0, 0),
        )
        for name in columns:
            table.add_column(name, justify=_COLUMNS[name], no_wrap=True)
        for row in self.rows:
            table.add_row(*(row[name] for name in columns))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        columns = list(_COLUMNS)
        table = self.table(columns)
        unbounded = options.update(max_width=10_000)  # the width it wants, not what it would get
        for name in _GIVE_WAY:
            if Measurement.get(console, unbounded, table).maximum <= options.max_width:
                break
            columns.remove(name)
            table = self.table(columns)
        yield table


KILLED = "killed"  # RUNNING in the storage, but its worker's process is gone


def state_label(trial: FrozenTrial, record: TrialRecord) -> str:
    """A trial's state as the user reads it: a trial the budget could not cover (told PRUNED
    with its reason, never run) is `skipped`, not a failure; one still RUNNING in the storage
    whose worker on this machine is gone (killed mid-trial) is `killed`, not running."""
    if trial.state == TrialState.PRUNED and record.skipped_reason:
        return "skipped"
    if worker_gone(trial):
        return KILLED
    return trial.state.name.lower()


def trials_table(
    study: optuna.Study, title: str, fixed: Mapping[str, Any] | None = None
) -> TrialsTable:
    """Every trial of the study, Pareto-front members starred, best validation accuracy first;
    `fixed`: the search space's fixed values (a trial records only what it sampled).

    The front is the study's: validation accuracy (of the model each trial delivered) against
    cost. Test accuracy is shown beside it, never ranked on; `harness report` adds the
    baselines to the front and walks it to a recommendation.
    """
    front = pareto_numbers(study)
    trials = study.get_trials(deepcopy=False)  # one snapshot: other workers may add trials
    records = {t.number: TrialRecord.from_attrs(t.user_attrs) for t in trials}

    def order(t: FrozenTrial) -> tuple[int, float]:
        return (t.state != TrialState.COMPLETE, -(records[t.number].selection_accuracy or 0.0))

    rows = []
    for trial in sorted(trials, key=order):
        record, params = records[trial.number], {**(fixed or {}), **trial.params}
        state = state_label(trial, record)
        cells = [
            f"{trial.number}{'*' if trial.number in front else ' '}",
            f"ckpt of {record.checkpoint_of}" if record.is_checkpoint else state,
            _epochs_cell(params.get("n_epochs"), record.epochs_run),
            _fmt(params.get("learning_rate_multiplier"), ".3g"),
            str(params.get("batch_size", "-")),
            str(record.train_examples or params.get("train_examples") or "all"),
            # A trial that did not complete delivered no model: what it validated is no score.
            _fmt(record.selection_accuracy if trial.state == TrialState.COMPLETE else None, ".4f"),
            _fmt(record.test_accuracy, ".4f"),
            _fmt(record.test_macro_f1, ".4f"),
            dollars(record.cost_usd),
            duration(record.wall_seconds),
        ]
        rows.append(dict(zip(_COLUMNS, cells, strict=True)))
    if len(study.directions) > 1:
        return TrialsTable(title, rows)
    return TrialsTable(title, rows, _BEST + _LEGEND.split(" cost.", 1)[1])

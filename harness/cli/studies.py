"""`harness studies`: the studies in a storage, with what each holds and where it came from.

(Opening a study by its name, as every command's EXPERIMENT, is `harness.cli.common.load_target`.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from harness.cli.common import (
    SetOption,
    app,
    console,
    load_target,
    one_format,
    open_storage,
    sqlite_missing,
    user_errors,
)
from harness.config import DEFAULT_STORAGE, EXPERIMENTS_DIR, load_experiment
from harness.errors import ConfigError
from harness.locations import redact_text, with_driver

if TYPE_CHECKING:
    import optuna

# `load_target` lives with the other common arguments; importable from here as well.
__all__ = ["StudyRow", "load_target", "studies", "study_rows"]


@dataclass(frozen=True)
class StudyRow:
    """One study as `harness studies` lists it."""

    name: str
    complete: int
    checkpoints: int
    running: int
    killed: int  # RUNNING in the storage, their worker on this machine gone: not running
    failed: int
    other: int  # waiting (queued retries) and pruned
    skipped: int  # of `other`: pruned because the budget could not cover them (never run)
    best_valid_accuracy: float | None
    spent_usd: float
    reserved_usd: float  # held for trials in flight (killed ones too, until the next sweep)
    experiment: str | None
    last_activity: str | None  # ISO 8601, local time, to the second
    synthetic: bool = False  # its trials ran on a test server: figures, never results
    # `other` as `harness trials` names its trials: queued to run (a killed trial's retry), and
    # pruned for another reason than the budget.
    waiting: int = 0
    pruned: int = 0


def study_rows(storage: Any) -> list[StudyRow]:
    """Every study in `storage`, by name."""
    import optuna

    rows = []
    for summary in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        rows.append(_row(study))
    return rows


def _row(study: optuna.Study) -> StudyRow:
    from optuna.trial import TrialState

    from harness.sweep.budget import ledger_usd
    from harness.sweep.study import worker_gone
    from harness.tracking.journal import ran_on_a_test_server
    from harness.tracking.record import StudyOrigin, TrialRecord

    trials = study.get_trials(deepcopy=False)
    records = [TrialRecord.from_attrs(t.user_attrs) for t in trials]
    complete = [r for t, r in zip(trials, records, strict=True) if t.state == TrialState.COMPLETE]
    accuracies = [r.selection_accuracy for r in complete if r.selection_accuracy is not None]
    states = [t.state for t in trials]
    moments = [m for t in trials for m in (t.datetime_start, t.datetime_complete) if m]
    origin = StudyOrigin.from_attrs(study.user_attrs)
    killed = sum(worker_gone(t) for t in trials)
    skipped = sum(
        t.state == TrialState.PRUNED and bool(r.skipped_reason)
        for t, r in zip(trials, records, strict=True)
    )
    # As the sweep's status line reads the ledger: what trials' records (`ledger_usd`) add up to.
    spent, reserved = ledger_usd(trials)
    return StudyRow(
        name=study.study_name,
        complete=sum(not r.is_checkpoint for r in complete),
        checkpoints=sum(r.is_checkpoint for r in complete),
        running=states.count(TrialState.RUNNING) - killed,
        killed=killed,
        failed=states.count(TrialState.FAIL),
        other=states.count(TrialState.WAITING) + states.count(TrialState.PRUNED),
        skipped=skipped,
        best_valid_accuracy=max(accuracies) if accuracies else None,
        spent_usd=spent,
        reserved_usd=reserved,
        experiment=origin.path or _experiment_named(study.study_name),
        last_activity=max(moments).isoformat(sep=" ", timespec="seconds") if moments else None,
        synthetic=ran_on_a_test_server(trials),
        waiting=states.count(TrialState.WAITING),
        pruned=states.count(TrialState.PRUNED) - skipped,
    )


def _experiment_named(study_name: str) -> str | None:
    """For a study that does not record its experiment: the file in `experiments/` whose study
    has its name, marked as a guess."""
    for path in sorted(Path(EXPERIMENTS_DIR).glob("*.yaml")):
        try:
            if load_experiment(str(path)).study_name == study_name:
                return f"{path} (by name)"
        except ConfigError:
            continue
    return None


def _trial_counts(row: StudyRow) -> str:
    from harness.cli.console import dollars

    parts = [f"{row.complete} done"]
    parts += [f"{row.checkpoints} ckpt"] if row.checkpoints else []
    parts += [f"{row.running} running"] if row.running else []
    parts += [f"{row.killed} killed"] if row.killed else []
    parts += [f"${dollars(row.reserved_usd)} reserved"] if row.reserved_usd else []
    parts += [f"{row.failed} failed"] if row.failed else []
    # As `harness trials` names them: a trial the budget could not cover is skipped, a killed
    # trial's retry queued to run is waiting.
    parts += [f"{row.skipped} skipped"] if row.skipped else []
    parts += [f"{row.waiting} waiting"] if row.waiting else []
    parts += [f"{row.pruned} pruned"] if row.pruned else []
    parts += ["synthetic (test server)"] if row.synthetic else []
    return ", ".join(parts)


@app.command()
@user_errors
def studies(
    storage: Annotated[
        str | None,
        typer.Option(metavar="URL", help=f"Study storage (default: {DEFAULT_STORAGE})."),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(metavar="EXPERIMENT", help="Use this experiment's study.storage."),
    ] = None,
    set_: SetOption = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON list of studies.")] = False,
) -> None:
    """List the studies in a storage: trials by state, best validation accuracy, money spent,
    the experiment each came from, last activity."""
    if storage is not None and experiment is not None:
        raise ConfigError("--storage and --experiment: give one (the experiment names a storage)")
    if set_ and experiment is None:
        raise ConfigError("--set applies to an experiment's config: give --experiment too")
    url = storage or (
        load_target(experiment, set_).config.study.storage if experiment else DEFAULT_STORAGE
    )
    rows = [] if sqlite_missing(with_driver(url)) else study_rows(open_storage(url))
    if one_format(json=json_) == "json":
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return
    if not rows:
        console.print(f"no studies in {redact_text(url)}", markup=False, highlight=False)
        return
    console.print(studies_table(rows, url, console.width))


# Laid out by hand, so that nothing is cut inside a word: numbers and times keep their width, a
# study name up to 24 characters, and when the row is too wide the experiment (down to 12) and then
# the trial counts (down to "1 running,") and a long study name (down to 12) give way, wrapping at
# spaces. Only a study name or an experiment path wider than its column is folded.
_NAMES = ("study", "trials", "valid", "spent $", "experiment", "last active")
_SHRINK = (("experiment", 12), ("trials", 10), ("study", 12))


def studies_table(rows: list[StudyRow], url: str, width: int = 80) -> Any:
    """The rich table of `harness studies` for a terminal `width` wide: `valid` is the best
    validation accuracy, spent dollars to three significant digits, the last activity to the
    minute."""
    from rich import box
    from rich.table import Table

    from harness.cli.console import dollars

    cells = [
        [
            row.name,
            _trial_counts(row),
            "-" if row.best_valid_accuracy is None else f"{row.best_valid_accuracy:.4f}",
            dollars(row.spent_usd),
            row.experiment or "-",
            (row.last_activity or "-").replace("T", " ")[:16],  # to the minute
        ]
        for row in rows
    ]
    table = Table(
        title=f"studies in {redact_text(url)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    for name, size in _column_widths(cells, width).items():
        table.add_column(
            name,
            width=size,
            overflow="fold" if name in ("study", "experiment") else "ellipsis",
            justify="right" if name in ("valid", "spent $") else "left",
        )
    for row_cells in cells:
        table.add_row(*row_cells)
    return table


def _column_widths(cells: list[list[str]], width: int) -> dict[str, int]:
    widths = {
        name: max([len(name), *(len(row[index]) for row in cells)])
        for index, name in enumerate(_NAMES)
    }
    widths["study"] = min(widths["study"], 24)
    # Each column has a space of padding after it, and the box a separator between columns.
    excess = sum(widths.values()) + 2 * len(_NAMES) - 1 - width
    for name, floor in _SHRINK:
        cut = max(0, min(excess, widths[name] - floor))
        widths[name] -= cut
        excess -= cut
    return {name: size + 1 for name, size in widths.items()}  # rich's width counts the padding

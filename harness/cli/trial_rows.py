"""The study's trials as plain records: what `harness trials --json` and `--csv` write."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from harness.tracking.record import TrialRecord

# The fields of a trial record, in order: `--csv` columns (params flattened, lists joined by ";").
PARAMS = ("n_epochs", "learning_rate_multiplier", "batch_size", "train_examples", "base_model")
METRICS = ("valid_accuracy", "test_accuracy", "test_macro_f1", "test_weighted_f1", "test_mae")
COSTS = (
    *("cost_usd", "spent_usd", "train_cost_usd", "eval_cost_usd", "estimated_cost_usd"),
    *("eval_hosting_usd", "eval_hosting_hours", "compute_seconds", "trained_tokens"),
    "wall_seconds",
    # What the budget ledger counts for the trial (a failed one: its reservation, unless known
    # to have spent less), so the records add up to what `harness studies` says was spent.
    "ledger_usd",
)
CSV_COLUMNS = (
    *("number", "state", "pareto", "checkpoint_of", "checkpoints"),
    *(f"param_{name}" for name in PARAMS),
    *("epochs_run", "stopped_early", "train_examples_used", *METRICS, *COSTS),
    *("valid_accuracy_by_epoch", "cost_usd_by_epoch", "mlflow_run_id", "model_ref"),
    "model_deleted",
    *("started", "completed", "failure_reason"),
    "synthetic",
)


def trial_records(
    study: optuna.Study, fixed: dict[str, Any], local_files: bool = False
) -> list[dict[str, Any]]:
    """Every trial of the study by number, as plain data: what `--json` writes.

    `model_deleted` is true for an epoch checkpoint off the front whose weights the sweep
    deleted (`local_files`: the backend keeps its models in folders on this machine); its
    `model_ref` still says where they were.

    Each record: number, state (Optuna's, lower case; `skipped`: the budget could not cover it;
    `killed`: RUNNING in the storage, its worker on this machine gone), pareto, checkpoint_of
    (the trial an epoch checkpoint came from), checkpoints (the numbers of this trial's own),
    params (the search space's fixed values included), epochs_run, stopped_early,
    train_examples_used, metrics, cost, the per-epoch curves, the MLflow run, the model, start
    and end times, why it failed or was skipped, and whether it ran on a test server
    (`synthetic`).
    """
    from optuna.trial import TrialState

    from harness.cli.console import state_label
    from harness.sweep.budget import ledger_entries
    from harness.sweep.study import pareto_numbers
    from harness.tracking.journal import ran_on_a_test_server
    from harness.tracking.record import TrialRecord

    front = pareto_numbers(study)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    ledger = ledger_entries(trials)
    records = [TrialRecord.from_attrs(t.user_attrs) for t in trials]
    children: dict[int, list[int]] = {}
    for trial, record in zip(trials, records, strict=True):
        if record.checkpoint_of is not None:
            children.setdefault(record.checkpoint_of, []).append(trial.number)
    return [
        {
            "number": trial.number,
            "state": state_label(trial, record),
            "pareto": trial.number in front,
            "checkpoint_of": record.checkpoint_of,
            "checkpoints": children.get(trial.number, []),
            "params": {**dict.fromkeys(PARAMS), **fixed, **trial.params},
            **_outcome(record, ledger[trial.number][0], trial.state == TrialState.COMPLETE),
            "model_deleted": local_files
            and record.is_checkpoint
            and trial.number not in front
            and bool(record.model_ref)
            and not Path(record.model_ref or "").exists(),
            "started": _when(trial.datetime_start),
            "completed": _when(trial.datetime_complete),
            "failure_reason": record.failure_reason or record.skipped_reason or _gone(trial),
            # Ran on a test server on this machine: the figures prove the plumbing, never a result.
            "synthetic": ran_on_a_test_server([trial]),
        }
        for trial, record in zip(trials, records, strict=True)
    ]


def _gone(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a trial still RUNNING in the storage runs no more, where its worker is known gone."""
    from harness.sweep.study import worker_gone
    from harness.tracking.record import TrialRecord

    if not worker_gone(trial):
        return None
    record = TrialRecord.from_attrs(trial.user_attrs)
    return (
        f"its worker (pid {record.pid} on {record.host}) is gone: the next `harness sweep` "
        "fails it and runs its parameters again"
    )


def _outcome(record: TrialRecord, ledger_usd: float, delivered: bool) -> dict[str, Any]:
    """What a trial produced: epochs, metrics, cost, curves, its MLflow run and model. One
    that did not complete (`delivered` False) has no model, so no validation accuracy: the
    epochs it validated before it stopped are in its curve."""
    metrics = {k: _finite(getattr(record, k)) for k in METRICS[1:]}
    costs = {k: _finite(getattr(record, k)) for k in COSTS[:-1]}
    return {
        "epochs_run": record.epochs_run,
        "stopped_early": record.stopped_early,
        "train_examples_used": record.train_examples,
        "metrics": {
            "valid_accuracy": _finite(record.selection_accuracy) if delivered else None,
            **metrics,
        },
        "cost": {**costs, "ledger_usd": ledger_usd},
        "valid_accuracy_by_epoch": list(record.valid_accuracy_by_epoch),
        "cost_usd_by_epoch": list(record.cost_usd_by_epoch),
        "mlflow_run_id": record.mlflow_run_id,
        "model_ref": record.model_ref,
    }


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: those (never a real score or cost) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _when(moment: Any) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def write_csv(records: list[dict[str, Any]]) -> None:
    """The records flat, one row each, in `CSV_COLUMNS` order; empty where null."""
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        flat = {**record, **record["metrics"], **record["cost"]}
        flat.update({f"param_{k}": v for k, v in record["params"].items()})
        writer.writerow([_csv_cell(flat.get(column)) for column in CSV_COLUMNS])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ";".join(_csv_cell(v) for v in value)
    return str(value)

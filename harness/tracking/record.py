"""The trial record: the one schema of what a trial writes to the study and to MLflow.

Every key a trial stores as an Optuna user attribute, and every scalar metric its MLflow run
gets, is named here once (in the manner of Optuna's `_CONSTRAINTS_KEY`). Writers build the dicts
with the functions below; readers go through `TrialRecord.from_attrs`, never through string keys.

A trial's attributes are written in phases, each by one function:

- `launch_attrs` when the trial starts (its MLflow run, its estimate; per-epoch lists reset),
- `epoch_attrs` after every epoch (validation accuracy, cost so far, a checkpoint's test score),
- `worker_attrs` when a worker picks it up (host and pid, for crash recovery),
- `result_attrs` when it finishes (test metrics, costs, the model it delivered),
- `checkpoint_attrs` for an epoch checkpoint recorded as a trial of its own,
- `failure_attrs` when it fails, `skipped_attrs` when the budget cannot cover it, and
  `journal_key` for a backend's crash-proof notes.

Local model folders inside the project are recorded relative to it (`portable_ref`) and read
back absolute (`local_ref`), so a copied or moved project uses its own copies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from harness.config import Experiment
from harness.locations import redact_text
from harness.records import Cost, EpochResult, Metrics, TrialResult
from harness.tracking.refs import local_ref, portable_ref

MLFLOW_RUN_ID = "mlflow_run_id"
ESTIMATED_COST_USD = "estimated_cost_usd"
RESERVED_USD = "reserved_usd"  # the budget ledger: committed from launch until settled
SETTLED_USD = "settled_usd"  # what a failed trial is known to have cost
VALID_ACCURACY_BY_EPOCH = "valid_accuracy_by_epoch"
COST_USD_BY_EPOCH = "cost_usd_by_epoch"
CHECKPOINT_TEST_ACCURACY = "checkpoint_test_accuracy"
# Which validation examples each epoch's model / the delivered model got right, packed
# (`harness.scoring.pack_correct`): the report compares models paired, on the same examples.
VALID_CORRECT_BY_EPOCH = "valid_correct_by_epoch"
VALID_CORRECT = "valid_correct"
CHECKPOINT_OF = "checkpoint_of"
SPENT_USD = "spent_usd"
COST_USD = "cost_usd"
TEST_ACCURACY = "test_accuracy"
# Validation accuracy of the model the trial delivered: what the study optimises and the report
# chooses on (the test set only confirms).
VALID_ACCURACY = "valid_accuracy"
MODEL_REF = "model_ref"
EPOCHS_RUN = "epochs_run"
FAILURE_REASON = "failure_reason"
# Why a trial was never run: the budget could not cover its worst case (told PRUNED, not FAIL).
SKIPPED_REASON = "skipped_reason"
PROJECT_DIR = "project_dir"  # the working directory `./` model references were recorded in
HOST = "host"
PID = "pid"
JOURNAL_PREFIX = "journal."
# Epoch checkpoints a completed trial still has to record as trials of their own: written before
# the trial completes, so a kill in between leaves them to the next start, never lost.
CHECKPOINTS_DUE = "checkpoints_due"
# MLflow tags of a study's and a trial's runs (metrics are named in `trial_metrics`).
STUDY_TAG = "harness.study"
PRICES_TAG = "harness.prices"  # the price rows a sweep used, with source and date
TRIAL_TAG = "harness.trial_number"
CHECKPOINT_OF_TAG = "harness.checkpoint_of"
DATA_DIGEST_TAG = "harness.data_digest"  # written with the provenance tags
REGISTERED_MODEL_TAG = "harness.registered_model"
FINE_TUNED_MODEL_TAG = "fine_tuned_model"
JOB_ID_TAG = "job_id"
STOPPED_EARLY_TAG = "stopped_early"
PARETO_TAG = "pareto"  # the study's own front (trials only), written by the sweep
# The report's front, baselines included (a trial off it is beaten by a baseline or a trial):
# written by `harness report`, under its own name so it never flips the sweep's `pareto`.
REPORT_FRONT_TAG = "harness.report_front"
SYNTHETIC_TAG = "synthetic"
FAILURE_REASON_TAG = "failure_reason"
STOPPED_TAG = "harness.stopped"  # on a study's run: why its sweep started no more trials
# The run artifact folder holding a local model's files where the tracking store is remote.
MODEL_FILES = "model_files"
# The per-epoch lists a retried trial must start afresh (its journal it keeps).
EPOCH_LISTS = (
    VALID_ACCURACY_BY_EPOCH,
    COST_USD_BY_EPOCH,
    CHECKPOINT_TEST_ACCURACY,
    VALID_CORRECT_BY_EPOCH,
)
# Study user attributes written when the study is created: its experiment as resolved (`--set`
# applied), the file it came from and the overrides, so commands can open the study by its name.
EXPERIMENT_YAML = "experiment_yaml"
EXPERIMENT_PATH = "experiment_path"
EXPERIMENT_OVERRIDES = "experiment_overrides"


def journal_key(key: str) -> str:
    """The user attribute under which a backend's journal note `key` is stored."""
    return JOURNAL_PREFIX + key


@dataclass(frozen=True)
class TrialRecord:
    """What the study knows about one trial, typed; every field is optional because a trial
    still running (or failed) has written only some of them."""

    mlflow_run_id: str | None = None
    estimated_cost_usd: float | None = None
    valid_accuracy: float | None = None
    # Which validation examples the delivered model got right (packed; None in a study recorded
    # before it was kept: the report then compares that trial unpaired).
    valid_correct: str | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    test_weighted_f1: float | None = None
    test_mae: float | None = None
    test_out_of_set: int = 0
    cost_usd: float | None = None
    train_cost_usd: float | None = None
    eval_cost_usd: float | None = None
    # The part of eval_cost_usd that paid for hosting a deployment by the hour, and the hours
    # billed (absent: none), so the cost of ownership can count hosting per month.
    eval_hosting_usd: float = 0.0
    eval_hosting_hours: float = 0.0
    compute_seconds: float | None = None
    trained_tokens: int | None = None
    wall_seconds: float | None = None
    model_ref: str | None = None
    train_examples: int | None = None
    epochs_run: int | None = None
    stopped_early: bool = False
    valid_accuracy_by_epoch: tuple[float, ...] = ()
    cost_usd_by_epoch: tuple[float, ...] = ()
    checkpoint_test_accuracy: tuple[float | None, ...] = ()
    valid_correct_by_epoch: tuple[str | None, ...] = ()
    checkpoint_of: int | None = None
    spent_usd: float | None = None
    failure_reason: str | None = None
    skipped_reason: str | None = None
    host: str | None = None
    pid: int | None = None
    reserved_usd: float | None = None
    settled_usd: float | None = None
    checkpoints_due: tuple[tuple[int, str], ...] = ()
    # A remote backend's crash-proof notes (journal): the key its job is created under, and the
    # job's id once created. Trials that share a job key share one paid job.
    job_key: str | None = None
    job_id: str | None = None

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        """Read a trial's user attributes (unknown keys, such as journal notes, are ignored)."""
        names = cls.__dataclass_fields__
        values = {k: v for k, v in attrs.items() if k in names and v is not None}
        for key in EPOCH_LISTS:
            if key in values:
                values[key] = tuple(values[key])
        if CHECKPOINTS_DUE in values:
            due = values[CHECKPOINTS_DUE]
            values[CHECKPOINTS_DUE] = tuple(
                (int(e), local_ref(str(r), attrs.get(PROJECT_DIR))) for e, r in due
            )
        if MODEL_REF in values:
            values[MODEL_REF] = local_ref(str(values[MODEL_REF]), attrs.get(PROJECT_DIR))
        for note in ("job_key", "job_id"):
            if attrs.get(journal_key(note)):
                values[note] = str(attrs[journal_key(note)])
        return cls(**values)

    @property
    def selection_accuracy(self) -> float | None:
        """Validation accuracy of the model the trial delivered (for a trial recorded before
        `valid_accuracy` was, its last epoch's); None when it has none."""
        if self.valid_accuracy is not None:
            return float(self.valid_accuracy)
        curve = [a for a in self.valid_accuracy_by_epoch if a is not None]
        return float(curve[-1]) if curve else None

    @property
    def is_checkpoint(self) -> bool:
        """An epoch checkpoint of another trial, recorded as a trial of its own."""
        return self.checkpoint_of is not None

    @property
    def spent(self) -> float:
        """What this trial added to the money spent: a checkpoint's `cost_usd` includes training
        its parent already paid for, so it counts only `spent_usd` (its scoring)."""
        value = self.spent_usd if self.spent_usd is not None else self.cost_usd
        return float(value or 0.0)

    def curve(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-epoch validation accuracy and cost so far, of equal length."""
        accuracy = [a for a in self.valid_accuracy_by_epoch if a is not None]
        cost = [c for c in self.cost_usd_by_epoch if c is not None]
        n = min(len(accuracy), len(cost))
        return tuple(accuracy[:n]), tuple(cost[:n])


@dataclass(frozen=True)
class StudyOrigin:
    """The experiment a study was created from, as its user attributes hold it (a study made
    before they were written has none: `yaml` is None)."""

    yaml: str | None = None
    path: str | None = None
    overrides: tuple[str, ...] = ()

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StudyOrigin:
        yaml_text, path = attrs.get(EXPERIMENT_YAML), attrs.get(EXPERIMENT_PATH)
        return cls(
            yaml=str(yaml_text) if yaml_text else None,
            path=str(path) if path else None,
            overrides=tuple(str(o) for o in attrs.get(EXPERIMENT_OVERRIDES) or ()),
        )


def experiment_attrs(experiment: Experiment) -> dict[str, Any]:
    """What a new study records about its experiment: the resolved config as YAML (passwords
    and keys blanked, as everywhere else), its file (relative to the working directory when
    inside it, as the default storage is) and the `--set` overrides."""
    path = os.path.abspath(experiment.path)
    if not os.path.relpath(path).startswith(".."):
        path = os.path.relpath(path)
    text = yaml.safe_dump(experiment.raw, sort_keys=False, allow_unicode=True)
    return {
        EXPERIMENT_YAML: redact_text(text),
        EXPERIMENT_PATH: path,
        EXPERIMENT_OVERRIDES: [redact_text(o) for o in experiment.overrides],
    }


def launch_attrs(run_id: str | None, estimated_cost_usd: float) -> dict[str, Any]:
    """A trial starting: its run and estimate; the per-epoch lists start afresh (a retried trial
    inherits its predecessor's attributes, of which it keeps only the journal and the ledger's
    reservation, which `reserve_attrs` renews: not its reason for being skipped or failing)."""
    attrs: dict[str, Any] = {MLFLOW_RUN_ID: run_id, ESTIMATED_COST_USD: estimated_cost_usd}
    attrs |= {SKIPPED_REASON: None, FAILURE_REASON: None}
    attrs.update({key: [] for key in EPOCH_LISTS})
    return attrs


def epoch_attrs(attrs: Mapping[str, Any], epoch: EpochResult) -> dict[str, Any]:
    """The per-epoch lists of `attrs` with `epoch` appended."""
    values = {
        VALID_ACCURACY_BY_EPOCH: epoch.valid_accuracy,
        COST_USD_BY_EPOCH: epoch.cost_so_far.usd,
        CHECKPOINT_TEST_ACCURACY: epoch.test_accuracy,
        VALID_CORRECT_BY_EPOCH: epoch.valid_correct,
    }
    return {key: [*attrs.get(key, []), value] for key, value in values.items()}


def reserve_attrs(usd: float) -> dict[str, Any]:
    """The budget ledger's entry for a trial about to spend: its worst case, not yet settled."""
    return {RESERVED_USD: usd, SETTLED_USD: None}


def settle_attrs(usd: float) -> dict[str, Any]:
    """What a trial that did not complete is known to have cost (replaces its reservation)."""
    return {SETTLED_USD: usd}


def checkpoints_due_attrs(due: list[tuple[int, str]]) -> dict[str, Any]:
    """The (epoch, model reference) of every scored checkpoint a trial is about to record."""
    due_refs = [[epoch, portable_ref(ref)] for epoch, ref in due]
    return {CHECKPOINTS_DUE: due_refs, PROJECT_DIR: os.getcwd()}


def worker_attrs(host: str, pid: int) -> dict[str, Any]:
    """Who runs the trial, so a dead worker's trial is recognised on the same host."""
    return {HOST: host, PID: pid}


def failure_attrs(reason: str) -> dict[str, Any]:
    return {FAILURE_REASON: redact_text(reason)[:2000]}  # a provider may echo a key


def skipped_attrs(reason: str) -> dict[str, Any]:
    """A trial asked for but never run: the budget could not cover it (nothing was spent)."""
    return {SKIPPED_REASON: reason[:2000], **settle_attrs(0.0)}


def used_train_examples(requested: int | None, available: int | None) -> int | None:
    """The training-set size a trial really used: `requested` (None: all) capped at the
    `available` rows; `requested` as it is when the rows are not known."""
    if available is None:
        return requested
    return available if requested is None else min(requested, available)


def result_attrs(result: TrialResult, train_rows: int | None = None) -> dict[str, Any]:
    """What a finished trial records in the study beside its objective values; with
    `train_rows` (the training split's size), `train_examples` is the size used, not asked."""
    cost = result.total_cost
    return {
        COST_USD: cost.usd,
        "train_cost_usd": result.model.train_cost.usd,
        "eval_cost_usd": result.eval_cost.usd,
        **hosting_metrics(result.eval_cost),
        "compute_seconds": cost.compute_seconds,
        "trained_tokens": cost.trained_tokens,
        "wall_seconds": result.wall_seconds,
        VALID_ACCURACY: delivered_valid_accuracy(result),
        VALID_CORRECT: delivered_valid_correct(result),
        **{f"test_{k}": v for k, v in _test_scores(result.metrics).items()},
        MODEL_REF: portable_ref(result.model.model_ref),
        PROJECT_DIR: os.getcwd(),  # where `./` references were recorded from
        "train_examples": used_train_examples(result.spec.train_examples, train_rows),
        # The last epoch's number, not a count: a remote job reports only its last epochs.
        EPOCHS_RUN: result.model.epochs[-1].epoch if result.model.epochs else 0,
        "stopped_early": result.model.stopped_early,
    }


def hosting_metrics(cost: Cost) -> dict[str, float]:
    """`eval_hosting_usd` and `eval_hosting_hours`: what scoring paid to host a deployed model by
    the hour (an Azure deployment), as a trial attribute or MLflow metric; empty where none."""
    if not cost.hosting_hours and not cost.hosting_usd:
        return {}
    return {"eval_hosting_usd": cost.hosting_usd, "eval_hosting_hours": cost.hosting_hours}


def checkpoint_attrs(
    result: TrialResult, parent: int, run_id: str | None, train_examples: int | None = None
) -> dict[str, Any]:
    """A scored epoch checkpoint of trial `parent`, recorded as a trial of its own, with the
    training-set size its trial recorded (`train_examples`, the size used; else as asked)."""
    epochs = result.model.epochs
    own = next((e for e in reversed(epochs) if e.checkpoint == result.model.model_ref), None)
    scored = {VALID_ACCURACY: own.valid_accuracy, VALID_CORRECT: own.valid_correct} if own else {}
    return {
        **result_attrs(result, train_rows=train_examples),  # a size used caps the size asked
        **scored,
        MLFLOW_RUN_ID: run_id,
        CHECKPOINT_OF: parent,
        SPENT_USD: result.eval_cost.usd,
        VALID_ACCURACY_BY_EPOCH: [e.valid_accuracy for e in epochs],
        COST_USD_BY_EPOCH: [e.cost_so_far.usd for e in epochs],
    }


def delivered_valid_accuracy(result: TrialResult, epoch: int | None = None) -> float | None:
    """Validation accuracy of the model the trial delivered: that of its last epoch (or of epoch
    number `epoch`, for a checkpoint); None when the backend validated no epoch."""
    epochs = result.model.epochs
    if epoch is not None:
        return next((e.valid_accuracy for e in epochs if e.epoch == epoch), None)
    return epochs[-1].valid_accuracy if epochs else None


def delivered_valid_correct(result: TrialResult) -> str | None:
    """Which validation examples the delivered model (its last epoch) got right, packed."""
    epochs = result.model.epochs
    return epochs[-1].valid_correct if epochs else None


def objective_accuracy(result: TrialResult) -> float:
    """The accuracy the study is told: validation accuracy of the delivered model (test accuracy
    only where no epoch was validated; the record then has no `valid_accuracy` and the report
    says it had to choose on test)."""
    valid = delivered_valid_accuracy(result)
    return float(valid if valid is not None else result.metrics.accuracy)


def _test_scores(metrics: Metrics) -> dict[str, Any]:
    return {
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "weighted_f1": metrics.weighted_f1,
        "mae": metrics.mae,
        "out_of_set": metrics.out_of_set,
    }


def test_metrics(metrics: Metrics) -> dict[str, float | None]:
    """Test-set scores as MLflow metrics (`test_accuracy`, `test_macro_f1`, ...)."""
    return {
        f"test_{k}": float(v) if v is not None else None for k, v in _test_scores(metrics).items()
    }


def trial_metrics(result: TrialResult) -> dict[str, float | None]:
    """The scalar MLflow metrics of a finished trial, under the names DESIGN.md gives."""
    total = result.total_cost
    return {
        **test_metrics(result.metrics),
        COST_USD: total.usd,
        "train_cost_usd": result.model.train_cost.usd,
        "eval_cost_usd": result.eval_cost.usd,
        **hosting_metrics(result.eval_cost),
        "trained_tokens": float(total.trained_tokens),
        "compute_seconds": total.compute_seconds,
        "wall_seconds": result.wall_seconds,
        "epochs_trained": float(len(result.model.epochs)),
        "valid_accuracy_final": delivered_valid_accuracy(result),
    }


def trial_tags(result: TrialResult) -> dict[str, str]:
    """The MLflow tags of a finished trial: the model it delivered, how its training ended."""
    tags = {
        FINE_TUNED_MODEL_TAG: portable_ref(result.model.model_ref),
        STOPPED_EARLY_TAG: str(result.model.stopped_early).lower(),
    }
    if result.model.job_id:
        tags[JOB_ID_TAG] = result.model.job_id
    return tags


def epoch_metrics(epoch: EpochResult) -> dict[str, float | None]:
    """One epoch's MLflow metrics, logged at step = epoch number."""
    return {
        "valid_accuracy": epoch.valid_accuracy,
        "valid_loss": epoch.valid_loss,
        "train_loss": epoch.train_loss,
        "epoch_cost_usd": epoch.cost_so_far.usd,
        CHECKPOINT_TEST_ACCURACY: epoch.test_accuracy,
    }

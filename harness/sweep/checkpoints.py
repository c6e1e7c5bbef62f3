"""Epoch checkpoints as points of the front: score each, record it as a trial of its own.

A backend that keeps the model of an epoch before the last names it in `EpochResult.checkpoint`
(the local backend saves one per epoch, OpenAI keeps the last three). When a trial finishes, the
sweep scores every such checkpoint on the test set (the OpenAI backend has already done it and
charges nothing twice) and records it as a completed trial of the study with its own MLflow run,
so the Pareto front, the report's paired tests and `promote` treat it like any other model:

- params: the parent trial's (the schedule it was trained on); user attrs `checkpoint_of` (the
  parent's number) and `epochs_run` (its epoch); the MLflow run is named like
  `t012 ep=3 lr=2 bs=16 @ epoch 1 of t007`;
- `cost_usd`: what producing and scoring this model cost (the parent's cost so far at that
  epoch, plus scoring); `spent_usd`: what it added to the money spent (the scoring only: the
  training was the parent's), which is what budgets add up;
- checkpoints do not count towards `study.n_trials`.

At the end of a sweep, the backend deletes the checkpoints that are not on the front (`discard`):
a model that is dominated stays dominated whatever later trials find, so it can never be the one
to pick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.backends.base import Backend
from harness.records import (
    Cost,
    EpochResult,
    Metrics,
    PreparedData,
    TrainedModel,
    TrialResult,
    TrialSpec,
)
from harness.scoring import score
from harness.tracking.journal import ran_on_a_test_server
from harness.tracking.record import (
    SYNTHETIC_TAG,
    TrialRecord,
    checkpoint_attrs,
    journal_key,
    used_train_examples,
)


@dataclass(frozen=True)
class ScoredCheckpoint:
    """A scored checkpoint of a finished trial."""

    parent: int
    epoch: int
    result: TrialResult


def checkpoint_epochs(result: TrialResult) -> list[EpochResult]:
    """The epochs of `result` with a kept model other than the one the trial delivered."""
    return [
        e
        for e in result.model.epochs
        if e.checkpoint is not None and e.checkpoint != result.model.model_ref
    ]


def score_checkpoint(
    backend: Backend, data: PreparedData, result: TrialResult, epoch: EpochResult
) -> ScoredCheckpoint:
    """Predict the test set with one checkpoint of `result`; what it cost comes with it."""
    assert epoch.checkpoint is not None
    started = time.perf_counter()
    predictions, eval_cost = backend.predict(epoch.checkpoint, data.test.texts, data.labels)
    metrics = score(data.test.labels, [p.label for p in predictions], data.labels, data.ordinal)
    model = TrainedModel(
        model_ref=epoch.checkpoint,
        # By epoch number: a remote job's result lists only its last epochs (8, 9, 10 of 10).
        epochs=tuple(e for e in result.model.epochs if e.epoch <= epoch.epoch),
        train_cost=epoch.cost_so_far,
        job_id=result.model.job_id,
    )
    scored = TrialResult(
        spec=result.spec,
        model=model,
        metrics=metrics,
        eval_cost=eval_cost,
        wall_seconds=time.perf_counter() - started,
        predictions=tuple(predictions),
    )
    return ScoredCheckpoint(result.spec.number, epoch.epoch, scored)


def add_checkpoint_trial(
    study: optuna.Study,
    parent: optuna.Trial | FrozenTrial,
    checkpoint: ScoredCheckpoint,
    run_id: str | None,
    objectives: int,
    cost_limit: float | None = None,
) -> tuple[int, TrialRecord]:
    """Record a scored checkpoint as a completed trial; returns its trial number and record."""
    result = checkpoint.result
    # The rows its trial trained on, as the trial recorded them (capped at the split), so a
    # checkpoint never shows the size asked for beside its trial's size used.
    used = TrialRecord.from_attrs(parent.user_attrs).train_examples
    attrs = checkpoint_attrs(result, checkpoint.parent, run_id, train_examples=used)
    if ran_on_a_test_server([parent]):  # trained on a test server: labelled as its trial is
        attrs[journal_key(SYNTHETIC_TAG)] = "true"
    values = [
        next(
            (e.valid_accuracy for e in result.model.epochs if e.epoch == checkpoint.epoch),
            result.model.epochs[-1].valid_accuracy,
        ),
        result.total_cost.usd,
    ][:objectives]
    # The sampler's cost constraint is computed after `tell`; an added trial needs its own.
    system = {} if cost_limit is None else {"constraints": [result.total_cost.usd - cost_limit]}
    study.add_trial(
        optuna.trial.create_trial(
            params=parent.params,
            distributions=parent.distributions,
            values=values,
            user_attrs=attrs,
            system_attrs=system,
        )
    )
    added = [
        t.number
        for t in study.get_trials(deepcopy=False)
        if (record := TrialRecord.from_attrs(t.user_attrs)).checkpoint_of == checkpoint.parent
        and record.epochs_run == checkpoint.epoch
    ]
    return max(added), TrialRecord.from_attrs(attrs)


def checkpoint_run_name(checkpoint: ScoredCheckpoint, train_rows: int | None = None) -> str:
    """MLflow run name of a checkpoint trial, e.g. `t012 ep=3 lr=2 bs=16 @ epoch 1 of t007`;
    `n=` says the rows used, the size asked capped at `train_rows` (the training split's)."""
    spec = checkpoint.result.spec
    if spec.train_examples is not None:
        spec = replace(spec, train_examples=used_train_examples(spec.train_examples, train_rows))
    return f"{spec.run_name()} @ epoch {checkpoint.epoch} of t{checkpoint.parent:03d}"


def with_number(checkpoint: ScoredCheckpoint, number: int) -> ScoredCheckpoint:
    """The checkpoint with the trial number it is recorded under."""
    spec = replace(checkpoint.result.spec, number=number)
    return replace(checkpoint, result=replace(checkpoint.result, spec=spec))


def prune_dominated(study: optuna.Study, front: set[int], backend: Backend) -> int:
    """Have the backend delete the models of checkpoint trials off the front; returns how many
    it deleted (a provider's checkpoints are not the harness's to delete)."""
    pruned = 0
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.from_attrs(trial.user_attrs)
        if record.is_checkpoint and trial.number not in front and record.model_ref:
            pruned += backend.discard(record.model_ref)
    return pruned


def due_checkpoints(
    study: optuna.Study, spec_of: Callable[[FrozenTrial], TrialSpec]
) -> list[tuple[FrozenTrial, EpochResult, TrialResult]]:
    """Checkpoints that completed trials still owe the study (a kill came between the trial and
    its checkpoints): each with the parent trial and a result rebuilt from what it recorded."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    records = {t.number: TrialRecord.from_attrs(t.user_attrs) for t in complete}
    recorded = {(r.checkpoint_of, r.epochs_run) for r in records.values() if r.is_checkpoint}
    owed = []
    for trial in complete:
        record = records[trial.number]
        for epoch, ref in record.checkpoints_due:
            if (trial.number, epoch) not in recorded:
                result = _rebuilt(spec_of(trial), record, dict(record.checkpoints_due))
                point = next(e for e in result.model.epochs if e.epoch == epoch)
                owed.append((trial, replace(point, checkpoint=ref), result))
    return owed


def _rebuilt(spec: TrialSpec, record: TrialRecord, refs: dict[int, str]) -> TrialResult:
    """Enough of a finished trial's result to score its checkpoints: spec, epochs, costs."""
    accuracy, cost = record.curve()
    last = record.epochs_run or len(accuracy)
    first = last - len(accuracy) + 1  # a remote job records only its last epochs
    right = record.valid_correct_by_epoch  # empty for a trial recorded before it was kept
    epochs = tuple(
        EpochResult(
            first + i,
            a,
            None,
            None,
            Cost(usd=c),
            refs.get(first + i),
            valid_correct=right[i] if i < len(right) else None,
        )
        for i, (a, c) in enumerate(zip(accuracy, cost, strict=True))
    )
    model = TrainedModel(record.model_ref or "", epochs, Cost(), job_id=record.job_id)
    metrics = Metrics(record.test_accuracy or 0.0, 0.0, 0.0, None, 0)
    return TrialResult(spec, model, metrics, Cost(), 0.0, ())

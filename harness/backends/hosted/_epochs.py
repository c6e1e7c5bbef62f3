"""A finished remote job's epoch points: its checkpoints and final model, scored in epoch order.

Shared by every remote backend (OpenAI and compatible endpoints, Together AI): the job is paid in
full, then each kept checkpoint is scored on the validation set and, except the final model
(whose test scoring is the trial's own), on the test set, so one job gives several points of the
front. Each point's `cost_so_far` is what a job stopped at that epoch would have cost: training
prorated by epoch plus scoring that checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.backends.base import SCORING_RESERVED, EpochCallback, Journal
from harness.backends.hosted._eval import Evaluation
from harness.records import Cost, EpochResult, PreparedData, Split, TrainedModel
from harness.scoring import pack_correct

Scorer = Callable[[str, Split], Evaluation]  # (model id, split) -> its evaluation


@dataclass(frozen=True)
class JobCheckpoint:
    """An epoch-end checkpoint: a callable model with the metrics the API measured there."""

    epoch: int
    step: int
    model: str
    metrics: dict[str, float]


@dataclass
class FinishedJob:
    """A succeeded job: its model, trained tokens, result-file rows and checkpoints."""

    id: str
    fine_tuned_model: str
    trained_tokens: int | None
    n_epochs: int
    rows: list[dict[str, float]] = field(default_factory=list)
    result_csv: str | None = None
    checkpoints: list[JobCheckpoint] = field(default_factory=list)


@dataclass(frozen=True)
class PointPlan:
    """Which of a job's checkpoints become points."""

    evaluate_checkpoints: bool
    max_points: int  # how many epoch-end checkpoints the provider keeps, final model included


def epoch_points(
    job: FinishedJob,
    job_cost: Cost,
    data: PreparedData,
    score: Scorer,
    on_epoch: EpochCallback,
    journal: Journal,
    plan: PointPlan,
    scoring_reserved: Cost,
) -> TrainedModel:
    """Score checkpoints in epoch order, telling `on_epoch` about each (see the module doc);
    first journal `scoring_reserved` (the scoring part of the trial's worst case), since from
    here on this run pays for requests a retry would pay for again."""
    journal.record(SCORING_RESERVED, f"{scoring_reserved.usd:.6f}")
    spent, epochs, model_ref = Cost(), [], job.fine_tuned_model
    for point in points(job, plan):
        is_final = point.model == job.fine_tuned_model
        valid = score(point.model, data.validation)
        test = None if is_final else score(point.model, data.test)
        tested = test.cost if test is not None else Cost()
        spent += valid.cost + tested
        epochs.append(
            EpochResult(
                epoch=point.epoch,
                valid_accuracy=accuracy(valid, data.validation),
                valid_loss=point.metrics.get("full_valid_loss", point.metrics.get("valid_loss")),
                train_loss=point.metrics.get("train_loss"),
                # Scoring this checkpoint on the test set included: `predict` on it later is
                # served from the backend's cache at no cost (see harness.sweep.checkpoints).
                cost_so_far=scaled(job_cost, point.epoch / job.n_epochs) + valid.cost + tested,
                checkpoint=point.model,
                test_accuracy=None if test is None else accuracy(test, data.test),
                valid_correct=pack_correct(
                    data.validation.labels, [p.label for p in valid.predictions]
                ),
            )
        )
        if on_epoch(epochs[-1]) and not is_final:
            model_ref = point.model
            break
    journal.record("epoch_eval_cost_usd", f"{spent.usd:.6f}")
    journal.record("job_cost_usd", f"{job_cost.usd:.6f}")
    return TrainedModel(
        model_ref=model_ref,
        epochs=tuple(epochs),
        train_cost=job_cost + spent,
        stopped_early=model_ref != job.fine_tuned_model,
        job_id=job.id,
    )


def points(job: FinishedJob, plan: PointPlan) -> list[JobCheckpoint]:
    """Checkpoints before the last epoch (if scored), then the final model."""
    earlier = [c for c in job.checkpoints if c.epoch < job.n_epochs]
    if not plan.evaluate_checkpoints:
        earlier = []
    last = [c for c in job.checkpoints if c.epoch == job.n_epochs]
    metrics = last[-1].metrics if last else (job.rows[-1] if job.rows else {})
    final = JobCheckpoint(job.n_epochs, int(metrics.get("step", 0)), job.fine_tuned_model, metrics)
    keep = earlier[-(plan.max_points - 1) :] if plan.max_points > 1 else []
    return [*keep, final]


def point_count(n_epochs: int, plan: PointPlan) -> int:
    """How many models a job of `n_epochs` has scored at most (for worst-case estimates)."""
    return min(plan.max_points, n_epochs) if plan.evaluate_checkpoints else 1


def accuracy(result: Evaluation, split: Split) -> float:
    right = sum(p.label == y for p, y in zip(result.predictions, split.labels, strict=True))
    return right / len(split) if len(split) else 0.0


def scaled(cost: Cost, share: float) -> Cost:
    return Cost(
        usd=cost.usd * share,
        compute_seconds=cost.compute_seconds * share,
        trained_tokens=round(cost.trained_tokens * share),
        inference_tokens=round(cost.inference_tokens * share),
    )


def texts_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()[:16]

"""Training data checks and the simulated life of one fine-tuning job.

Nothing here trains anything: a job is a deterministic plan (status changes, events, checkpoints,
result CSV) laid out on the simulated clock when the job is created, revealed as the clock passes.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "JobPlan",
    "SimJob",
    "TrainingData",
    "approx_tokens",
    "parse_training_jsonl",
    "plan_job",
    "requested_hyperparameters",
    "resolve_hyperparameters",
]

RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_MAX_METRIC_EVENTS = 20
_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
_TERMINAL = ("succeeded", "failed", "cancelled")


def approx_tokens(text: str) -> int:
    """Token count the fake charges for: whitespace words x 1.3, rounded."""
    return round(len(text.split()) * 1.3)


@dataclass(frozen=True)
class TrainingData:
    """What the fake learned from an uploaded fine-tune JSONL file."""

    format: Literal["chat", "prompt_completion"]
    n_examples: int
    labels: tuple[str, ...]
    tokens: int


def parse_training_jsonl(content: bytes) -> TrainingData:
    """Check a fine-tune file the way OpenAI does at upload and summarise it.

    Raises:
        ValueError: with an OpenAI-style message naming the first bad line.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("Invalid file format for Fine-Tuning API. File must be UTF-8.") from exc
    formats: set[str] = set()
    labels: set[str] = set()
    words = 0
    n_examples = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        kind, label, line_words = _parse_example(number, line)
        formats.add(kind)
        labels.add(label)
        words += line_words
        n_examples += 1
    if n_examples == 0:
        raise ValueError("Invalid file format for Fine-Tuning API. The file contains no examples.")
    if len(formats) > 1:
        raise ValueError(
            "Invalid file format for Fine-Tuning API. Examples mix chat and prompt/completion."
        )
    kind = formats.pop()
    return TrainingData(kind, n_examples, tuple(sorted(labels)), round(words * 1.3))  # type: ignore[arg-type]


def _parse_example(number: int, line: str) -> tuple[str, str, int]:
    where = f"Invalid file format for Fine-Tuning API. Line {number}:"
    try:
        example = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} not valid JSON ({exc.msg}).") from exc
    if not isinstance(example, dict):
        raise ValueError(f"{where} each line must be a JSON object.")
    if "messages" in example:
        messages = example["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where} 'messages' must be a non-empty list.")
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise ValueError(f"{where} every message needs a valid 'role'.")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"{where} every message needs string 'content'.")
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        if not answers:
            raise ValueError(f"{where} example has no assistant message to train on.")
        words = sum(len(m["content"].split()) for m in messages)
        return "chat", answers[-1].strip(), words
    if isinstance(example.get("prompt"), str) and isinstance(example.get("completion"), str):
        words = len(example["prompt"].split()) + len(example["completion"].split())
        return "prompt_completion", example["completion"].strip(), words
    raise ValueError(f"{where} expected 'messages' or 'prompt' and 'completion'.")


def requested_hyperparameters(body: dict[str, Any]) -> dict[str, Any]:
    """The supervised hyperparameters a create-job body asks for, "auto" where unset."""
    method = body.get("method") or {}
    given = (method.get("supervised") or {}).get("hyperparameters") or body.get("hyperparameters")
    return {key: (given or {}).get(key, "auto") for key in _HYPERPARAMETERS}


def resolve_hyperparameters(requested: dict[str, Any], n_examples: int) -> dict[str, Any]:
    """Replace "auto" with numbers, approximating OpenAI's published defaults."""
    resolved = dict(requested)
    if resolved.get("n_epochs", "auto") == "auto":
        epochs = 3
        if n_examples * epochs < 100:
            epochs = min(25, math.ceil(100 / n_examples))
        elif n_examples * epochs > 25_000:
            epochs = max(1, 25_000 // n_examples)
        resolved["n_epochs"] = epochs
    if resolved.get("batch_size", "auto") == "auto":
        resolved["batch_size"] = max(1, min(256, round(n_examples * 0.002)))
    if resolved.get("learning_rate_multiplier", "auto") == "auto":
        resolved["learning_rate_multiplier"] = 1.8
    return resolved


@dataclass
class SimEvent:
    """One event of a job, visible once the clock reaches ``at``."""

    at: float
    id: str
    message: str
    level: str = "info"
    type: str = "message"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SimCheckpoint:
    """An epoch-end checkpoint, callable as a model once the clock reaches ``at``."""

    at: float
    id: str
    step: int
    epoch: int
    model: str
    metrics: dict[str, float]


@dataclass
class JobPlan:
    """Inputs that decide how a job will unfold."""

    job_id: str
    created: float
    duration: float
    hyperparameters: dict[str, Any]
    data: TrainingData
    fine_tuned_model: str
    has_validation: bool = False
    failure: dict[str, Any] | None = None  # {"code", "message", "param", "at": fraction}


@dataclass
class SimJob:
    """A job's whole planned timeline plus the request it came from."""

    plan: JobPlan
    request: dict[str, Any]
    phases: list[tuple[float, str]]
    events: list[SimEvent]
    checkpoints: list[SimCheckpoint]
    result_csv: str
    end_at: float
    end_status: str
    error: dict[str, Any] | None = None
    result_file_id: str | None = None

    @property
    def running_at(self) -> float:
        """Simulated time at which the job starts running (hyperparameters resolved)."""
        return next((at for at, status in self.phases if status == "running"), math.inf)

    def status(self, now: float) -> str:
        """Status at simulated time ``now``."""
        if now >= self.end_at:
            return self.end_status
        return [status for at, status in self.phases if at <= now][-1]

    def finished(self, now: float) -> bool:
        """Whether the job has reached a terminal status by ``now``."""
        return self.status(now) in _TERMINAL

    def to_api(self, now: float, unix: Callable[[float], int], organization: str) -> dict[str, Any]:
        """The ``FineTuningJob`` object as of ``now`` ("auto" resolved once running)."""
        status, request, plan = self.status(now), self.request, self.plan
        running = min(now, self.end_at) >= self.running_at  # a job failed early never ran
        hyperparameters = dict(plan.hyperparameters if running else request["hyperparameters"])
        succeeded = status == "succeeded"
        epochs = int(plan.hyperparameters["n_epochs"])
        return {
            "object": "fine_tuning.job",
            "id": plan.job_id,
            "created_at": unix(plan.created),
            "error": self.error if status == "failed" else None,
            "fine_tuned_model": plan.fine_tuned_model if succeeded else None,
            "finished_at": unix(self.end_at) if status in _TERMINAL else None,
            "hyperparameters": hyperparameters,
            "model": request["model"],
            "organization_id": f"org-{organization}",
            "result_files": [self.result_file_id] if succeeded and self.result_file_id else [],
            "status": status,
            "trained_tokens": plan.data.tokens * epochs if succeeded else None,
            "training_file": request["training_file"],
            "validation_file": request.get("validation_file"),
            "integrations": request.get("integrations") or [],
            "seed": request["seed"],
            "estimated_finish": unix(self.end_at) if status == "running" else None,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            "metadata": request.get("metadata"),
        }

    def events_api(self, now: float, unix: Callable[[float], int]) -> list[dict[str, Any]]:
        """``FineTuningJobEvent`` objects that happened by ``now``, newest first."""
        return [
            {
                "object": "fine_tuning.job.event",
                "id": event.id,
                "created_at": unix(event.at),
                "level": event.level,
                "message": event.message,
                "type": event.type,
                "data": event.data,
            }
            for event in reversed(self.events)
            if event.at <= now
        ]

    def checkpoints_api(self, now: float, unix: Callable[[float], int]) -> list[dict[str, Any]]:
        """``FineTuningJobCheckpoint`` objects created by ``now``, newest first."""
        return [
            {
                "object": "fine_tuning.job.checkpoint",
                "id": ckpt.id,
                "created_at": unix(ckpt.at),
                "fine_tuned_model_checkpoint": ckpt.model,
                "fine_tuning_job_id": self.plan.job_id,
                "step_number": ckpt.step,
                "metrics": ckpt.metrics,
            }
            for ckpt in reversed(self.checkpoints)
            if ckpt.at <= now
        ]

    def cancel(self, now: float, new_id: str) -> None:
        """Stop the job at ``now``: later events and checkpoints never happen."""
        self.events = [event for event in self.events if event.at <= now]
        self.checkpoints = [ckpt for ckpt in self.checkpoints if ckpt.at <= now]
        self.events.append(SimEvent(now, new_id, "Fine-tuning job cancelled"))
        self.end_at, self.end_status = now, "cancelled"

    def fail(self, now: float, new_id: str, error: dict[str, Any]) -> None:
        """Fail the job at ``now`` with ``error`` ({"code", "message", "param"})."""
        self.cancel(now, new_id)
        self.events[-1] = SimEvent(now, new_id, error["message"], level="error")
        self.end_status, self.error = "failed", error


def plan_job(
    plan: JobPlan, request: dict[str, Any], rng: random.Random, new_id: Callable[[str], str]
) -> SimJob:
    """Lay out a job's timeline: validate 10%, queue 10%, train 65%, then model checks.

    Args:
        plan: What decides the timeline.
        request: The create-job request (kept for the API representation).
        rng: Seeded generator for the simulated metrics.
        new_id: ``new_id(prefix) -> str`` for event and checkpoint ids.
    """
    t0, span = plan.created, plan.duration
    milestones = [
        (0.0, f"Created fine-tuning job: {plan.job_id}"),
        (0.0, f"Validating training file: {request['training_file']}"),
        (0.1, "Files validated, moving job to queued state"),
        (0.2, "Fine-tuning job started"),
        (0.9, f"New fine-tuned model created: {plan.fine_tuned_model}"),
        (0.95, "Evaluating model against our usage policies"),
        (1.0, "The job has successfully completed"),
    ]
    events = [SimEvent(t0 + f * span, new_id("ftevent"), text) for f, text in milestones]
    phases = [(t0, "validating_files"), (t0 + 0.1 * span, "queued"), (t0 + 0.2 * span, "running")]
    rows, checkpoints = _simulate_training(plan, rng, new_id, events)
    done = t0 + span
    events.sort(key=lambda event: event.at)
    job = SimJob(plan, request, phases, events, checkpoints, _csv(rows), done, "succeeded")
    if plan.failure is not None:
        failure = dict(plan.failure)
        at = t0 + span * min(max(float(failure.pop("at", 0.5)), 0.0), 0.99)
        job.fail(at, new_id("ftevent"), {"param": None, **failure})
    return job


def _simulate_training(
    plan: JobPlan, rng: random.Random, new_id: Callable[[str], str], events: list[SimEvent]
) -> tuple[list[dict[str, float | None]], list[SimCheckpoint]]:
    """Per-step metrics (result CSV rows), metrics events and epoch-end checkpoints."""
    hp = plan.hyperparameters
    epochs = int(hp["n_epochs"])
    steps_per_epoch = math.ceil(plan.data.n_examples / int(hp["batch_size"]))
    total = steps_per_epoch * epochs
    start, run_span = plan.created + 0.2 * plan.duration, 0.65 * plan.duration
    event_every = max(1, math.ceil(total / _MAX_METRIC_EVENTS))
    valid_every = max(1, total // 10)
    speed = math.sqrt(float(hp["learning_rate_multiplier"]))
    rows: list[dict[str, float | None]] = []
    checkpoints: list[SimCheckpoint] = []
    for step in range(1, total + 1):
        progress = step / steps_per_epoch  # epochs done
        at = start + run_span * step / total
        train_loss = max(0.01, 0.05 + 2.2 * math.exp(-1.2 * speed * progress) + rng.gauss(0, 0.02))
        row: dict[str, float | None] = {
            "step": step,
            "train_loss": train_loss,
            "train_accuracy": _clamp(1 - train_loss / 2.4 + rng.gauss(0, 0.01)),
            "valid_loss": None,
            "valid_mean_token_accuracy": None,
        }
        epoch_end = step % steps_per_epoch == 0
        clean_valid = 0.08 + 2.2 * math.exp(-speed * progress) + 0.03 * max(0.0, progress - 3) ** 2
        if plan.has_validation and (step % valid_every == 0 or epoch_end):
            valid_loss = max(0.01, clean_valid + rng.gauss(0, 0.03))
            row["valid_loss"] = valid_loss
            row["valid_mean_token_accuracy"] = _clamp(1 - valid_loss / 2.4)
        rows.append(row)
        if step % event_every == 0 or step == total:
            events.append(_metrics_event(at, new_id("ftevent"), row, total))
        epoch = step // steps_per_epoch
        if epoch_end and epoch > epochs - 3:
            metrics = _checkpoint_metrics(row, clean_valid if plan.has_validation else None)
            name = f"{plan.fine_tuned_model}:ckpt-step-{step}"
            checkpoints.append(SimCheckpoint(at, new_id("ftckpt"), step, epoch, name, metrics))
            events.append(SimEvent(at, new_id("ftevent"), f"Checkpoint created at step {step}"))
    return rows, checkpoints


def _metrics_event(at: float, event_id: str, row: dict[str, float | None], total: int) -> SimEvent:
    message = f"Step {row['step']}/{total}: training loss={row['train_loss']:.2f}"
    data: dict[str, Any] = {
        "step": row["step"],
        "total_steps": total,
        "train_loss": row["train_loss"],
        "train_mean_token_accuracy": row["train_accuracy"],
    }
    if row["valid_loss"] is not None:
        message += f", validation loss={row['valid_loss']:.2f}"
        data["valid_loss"] = row["valid_loss"]
        data["valid_mean_token_accuracy"] = row["valid_mean_token_accuracy"]
    return SimEvent(at, event_id, message, type="metrics", data=data)


def _checkpoint_metrics(
    row: dict[str, float | None], full_valid_loss: float | None
) -> dict[str, float]:
    metrics = {
        "step": float(row["step"] or 0),
        "train_loss": float(row["train_loss"] or 0),
        "train_mean_token_accuracy": float(row["train_accuracy"] or 0),
    }
    if full_valid_loss is not None:
        metrics["valid_loss"] = float(row["valid_loss"] or 0)
        metrics["valid_mean_token_accuracy"] = float(row["valid_mean_token_accuracy"] or 0)
        metrics["full_valid_loss"] = full_valid_loss
        metrics["full_valid_mean_token_accuracy"] = _clamp(1 - full_valid_loss / 2.4)
    return metrics


def _csv(rows: list[dict[str, float | None]]) -> str:
    lines = [",".join(RESULT_COLUMNS)]
    for row in rows:
        cells = [str(row["step"])]
        cells += [
            "" if row[column] is None else f"{row[column]:.5f}" for column in RESULT_COLUMNS[1:]
        ]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))

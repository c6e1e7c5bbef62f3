"""The local backend's training loop: one trial's run, epoch by epoch, in plain PyTorch.

Not `transformers.Trainer`: a trial must cost no more than a hand-written loop (benchmarked), and
the loop is short enough to read on one screen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from harness.backends.base import Progress
from harness.backends.local._embedding_rows import lazy_input_embeddings
from harness.backends.local._models import load_error
from harness.backends.local._torch_utils import (
    BUCKET_BATCHES,
    autocast,
    build_optimizer,
    clip_gradients,
    length_batches,
    load_model_folder,
    ordered_logits,
    pad_batch,
    padding_of,
)
from harness.backends.local.config import LocalBackendConfig
from harness.data.prepare import subsample
from harness.errors import DataError
from harness.records import PreparedData, Split, TrialSpec

MAX_GRAD_NORM = 1.0  # as transformers.Trainer: keeps the larger learning rates of a sweep stable


@dataclass
class Run:
    """Everything one trial's training loop touches, so helpers take one argument."""

    model: Any
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    ids: list[list[int]]
    labels: torch.Tensor
    batch_size: int
    pad: tuple[int, bool]
    chunk_batches: int = BUCKET_BATCHES  # 1: plain shuffled batches (no length bucketing)
    train_seconds: float = 0.0
    trained: int = 0
    trained_tokens: int = 0  # tokens of every example, every epoch (OpenAI bills the same)


def start_run(
    config: LocalBackendConfig,
    device: torch.device,
    spec: TrialSpec,
    data: PreparedData,
    path: str,
    tokenizer: Any,
    by_text: dict[str, list[int]],
) -> Run:
    """Pick the trial's examples, load a fresh model and build optimizer and schedule."""
    subset = subsample(data.train, spec.train_examples, spec.seed)
    torch.manual_seed(spec.seed)  # the new head's initialisation and dropout
    try:
        model = load_model_folder(path, data.labels).to(device)
    except (OSError, ValueError) as exc:
        raise load_error(spec.base_model, path, exc) from None
    optimizer, scheduler = build_optimizer(
        model,
        lr=config.base_learning_rate * spec.learning_rate_multiplier,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        steps=spec.n_epochs * math.ceil(len(subset) / spec.batch_size),
        rows=lazy_input_embeddings(model),
    )
    return Run(
        model=model,
        device=device,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(spec.seed),
        ids=[by_text[text] for text in subset.texts],
        labels=torch.tensor(label_ids(subset, data.labels)),
        batch_size=spec.batch_size,
        pad=padding_of(tokenizer),
    )


def train_epoch(run: Run, progress: Progress, description: str) -> float:
    """One pass over the trial's examples in seeded random, length-bucketed batches
    (`length_batches`); returns the mean loss."""
    n = len(run.ids)
    lengths = [len(ids) for ids in run.ids]
    batches = length_batches(lengths, run.batch_size, run.generator, run.chunk_batches)
    total = torch.zeros((), device=run.device)  # summed on the device: no sync per step
    run.model.train()
    progress.start(description, total=len(batches))
    began = time.perf_counter()
    try:
        for rows in batches:
            total += train_step(run, rows)
            progress.advance()
        mean_loss = float(total) / n
    finally:
        progress.finish()
    run.train_seconds += time.perf_counter() - began
    run.trained += n
    run.trained_tokens += sum(len(ids) for ids in run.ids)
    return mean_loss


def train_step(run: Run, rows: list[int]) -> torch.Tensor:
    """One optimizer step on the examples `rows`; their summed loss, left on the device.

    Also what the calibration times (`_calibration`), so the per-token rate a trial is
    priced at is measured on exactly this code.
    """
    batch = pad_batch([run.ids[i] for i in rows], *run.pad, run.device)
    labels = run.labels[rows].to(run.device)
    with autocast(run.device):
        logits = run.model(**batch).logits
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    clip_gradients(run.model, MAX_GRAD_NORM)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss.detach() * len(rows)


def validate(
    run: Run, ids: list[list[int]], labels: torch.Tensor, eval_batch_size: int
) -> tuple[float, float, list[bool]]:
    """Accuracy and mean cross-entropy on the validation split, and which examples were right
    (for paired comparisons between models)."""
    logits = ordered_logits(run.model, ids, eval_batch_size, run.pad, run.device)
    right = logits.argmax(dim=-1) == labels
    return right.float().mean().item(), F.cross_entropy(logits, labels).item(), right.tolist()


def label_ids(split: Split, labels: tuple[str, ...]) -> list[int]:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(split.labels) - set(index))
    if unknown:
        raise DataError(f"labels {unknown} are not in the dataset's label set {list(labels)}")
    return [index[label] for label in split.labels]


def check_inputs(spec: TrialSpec, data: PreparedData) -> None:
    if spec.n_epochs < 1 or spec.batch_size < 1:
        raise ValueError(
            f"need n_epochs >= 1 and batch_size >= 1, got {spec.n_epochs=}, {spec.batch_size=}"
        )
    if spec.train_examples is not None and spec.train_examples < 1:
        raise ValueError(f"train_examples must be None or >= 1, got {spec.train_examples=}")
    if len(data.train) == 0 or len(data.validation) == 0:
        raise DataError(f"{data.name}: the train and validation splits must not be empty")

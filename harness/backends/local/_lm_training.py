"""The local LM backend's loop: LoRA training on completion tokens, and label scoring.

Training. Batches are padded on the left, so every row's completion (label and end token) sits
at the end: the output head runs only over the last positions (`logits_to_keep`), not over the
prompt, whose tokens carry no loss. On SmolLM2 the head (49,152 x 576) is a fifth of the
forward pass, so this is a fifth of the work a loop with `labels=` and `-100` masking does for
the same loss. Position ids count real tokens only, so a row's padding does not shift its
positions.

Scoring. Every label's tokens are scored given the prompt: log p(label) = the sum of its tokens'
log-probabilities, and the label set's probabilities are renormalised over the set (so a
prediction is always a label). Labels whose tokens differ only in the last one share a forward
pass; single-token labels (`fresh`, `rotten`) need one pass over the prompts. Greedy decoding
would answer a label only if that label's token is the most probable one at each of its
positions: how often no label passes is counted (`out_of_set`), as the OpenAI backend counts
answers outside the set.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from harness.backends.base import Progress
from harness.backends.local._torch_utils import (
    BUCKET_BATCHES,
    autocast,
    build_optimizer,
    clip_gradients,
    length_batches,
)
from harness.backends.local.config import LocalLMBackendConfig
from harness.errors import DataError
from harness.records import Prediction, PreparedData, TrialSpec

# PEFT (0.21) probes `model.is_gradient_checkpointing`, which transformers 5 deprecates with a
# FutureWarning on every adapter made: once per trial on the sweep's screen, for nothing the
# user can change. Only that message is silenced.
warnings.filterwarnings(
    "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
)

MAX_GRAD_NORM = 1.0  # as transformers.Trainer and the encoder's loop


@dataclass
class LMRun:
    """Everything one trial's training loop touches."""

    model: Any
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    examples: list[tuple[list[int], int]]  # (prompt + completion ids, prompt length)
    batch_size: int
    pad_id: int
    chunk_batches: int = BUCKET_BATCHES  # 1: plain shuffled batches (no length bucketing)
    trained_tokens: int = 0  # every token of every example, every epoch
    train_seconds: float = 0.0  # wall time in the training loop (validation not included)


@dataclass(frozen=True)
class Scores:
    """Label log-probabilities of some prompts, in their order."""

    logprobs: torch.Tensor  # [texts, labels]: log p(label | prompt), not renormalised
    greedy_in_set: list[bool]  # greedy decoding would have answered some label
    tokens: int  # tokens run through the model


def attach_lora(model: Any, rank: int, alpha: int, dropout: float, targets: Any) -> Any:
    """Wrap a causal LM with fresh LoRA adapters (seed torch first: they start random)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def start_lm_run(
    model: Any,
    device: torch.device,
    examples: list[tuple[list[int], int]],
    hyper: tuple[float, int, int, float, float],
    seed: int,
    pad_id: int,
) -> LMRun:
    """Optimizer and schedule for a LoRA-wrapped model; `hyper` is (learning rate, batch size,
    epochs, weight decay, warmup ratio)."""
    lr, batch_size, epochs, weight_decay, warmup = hyper
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(
        _Params(trainable),
        lr=lr,
        weight_decay=weight_decay,
        warmup_ratio=warmup,
        steps=epochs * math.ceil(len(examples) / batch_size),
    )
    return LMRun(
        model=model,
        device=device,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(seed),
        examples=examples,
        batch_size=batch_size,
        pad_id=pad_id,
    )


class _Params:
    """Only the adapters' parameters, for `build_optimizer` (the frozen base gets no state)."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self._params = params

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return iter(self._params)


def train_epoch(run: LMRun, progress: Progress, description: str) -> float:
    """One pass in seeded random, length-bucketed batches (`length_batches`); the mean loss
    per completion token."""
    lengths = [len(ids) for ids, _ in run.examples]
    batches = length_batches(lengths, run.batch_size, run.generator, run.chunk_batches)
    total = torch.zeros((), device=run.device)
    counted = 0
    run.model.train()
    progress.start(description, total=len(batches))
    began = time.perf_counter()
    try:
        for batch in batches:
            loss, tokens = train_step(run, [run.examples[i] for i in batch])
            total += loss
            counted += tokens
            progress.advance()
    finally:
        progress.finish()
    run.train_seconds += time.perf_counter() - began
    run.trained_tokens += sum(lengths)
    return float(total) / max(counted, 1)


def train_step(run: LMRun, rows: Sequence[tuple[list[int], int]]) -> tuple[torch.Tensor, int]:
    """One optimizer step; the summed completion-token loss (on the device) and its tokens.

    Also what the calibration times, so the rate a trial is priced at is this code's.
    """
    inputs, targets = completion_batch(rows, run.pad_id, run.device)
    with autocast(run.device):
        logits = run.model(**inputs, logits_to_keep=targets.shape[1] + 1).logits
    loss = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    tokens = int((targets != -100).sum())
    (loss / max(tokens, 1)).backward()
    clip_gradients(run.model, MAX_GRAD_NORM)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss.detach(), tokens


def completion_batch(
    rows: Sequence[tuple[list[int], int]], pad_id: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Left-padded inputs and the completion targets of their last positions.

    Returns:
        The model inputs, and targets [rows, C] for the last C tokens of every row (C: the
        longest completion), -100 wherever a row's token there is prompt, not completion.
    """
    inputs = left_padded([ids for ids, _ in rows], pad_id, device)
    width = max(len(ids) - prompt for ids, prompt in rows)
    targets = inputs["input_ids"][:, -width:].clone()
    for row, (ids, prompt) in enumerate(rows):
        targets[row, : width - (len(ids) - prompt)] = -100
    return inputs, targets


def left_padded(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Pad on the left to the longest sequence; positions count real tokens only."""
    width = max(len(s) for s in sequences)
    ids = [[pad_id] * (width - len(s)) + list(s) for s in sequences]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in sequences]
    attention = torch.tensor(mask, dtype=torch.long, device=device)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "attention_mask": attention,
        "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
    }


def score_labels(
    model: Any,
    prompts: Sequence[list[int]],
    labels: Sequence[list[int]],
    batch_size: int,
    pad_id: int,
    device: torch.device,
) -> Scores:
    """log p(label | prompt) for every prompt and label, with greedy decoding's in-set flag."""
    groups: dict[tuple[int, ...], list[int]] = {}  # label tokens but the last -> labels
    for k, ids in enumerate(labels):
        groups.setdefault(tuple(ids[:-1]), []).append(k)
    out = torch.empty(len(prompts), len(labels), dtype=torch.float32)
    greedy = torch.zeros(len(prompts), len(labels), dtype=torch.bool)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    tokens = 0
    model.eval()
    with torch.inference_mode(), autocast(device):
        for prefix, members in groups.items():
            keep = len(prefix) + 1  # positions that predict the label's tokens
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = left_padded([[*prompts[i], *prefix] for i in rows], pad_id, device)
                tokens += int(batch["attention_mask"].sum())
                logits = model(**batch, logits_to_keep=keep).logits.float()
                logp = logits.log_softmax(-1).cpu()
                best = logits.argmax(-1).cpu()
                for k in members:
                    target = torch.tensor(labels[k])
                    out[rows, k] = logp[:, torch.arange(keep), target].sum(-1)
                    greedy[rows, k] = (best == target).all(-1)
    return Scores(out, greedy.any(-1).tolist(), tokens)


def scored_tokens(prompts: Sequence[list[int]], labels: Sequence[list[int]]) -> int:
    """The tokens `score_labels` runs through the model: what scoring is priced by."""
    prefixes = {tuple(ids[:-1]) for ids in labels}
    return sum(len(p) + len(prefix) for p in prompts for prefix in prefixes)


def restricted(logprobs: torch.Tensor) -> torch.Tensor:
    """Probabilities renormalised over the label set."""
    return logprobs.log_softmax(-1).exp()


def validate(
    model: Any,
    prompts: Sequence[list[int]],
    labels: Sequence[list[int]],
    truth: torch.Tensor,
    batch_size: int,
    pad_id: int,
    device: torch.device,
) -> tuple[float, float, int, list[bool]]:
    """Accuracy, restricted cross-entropy, answers greedy decoding puts outside the label set,
    and which examples were right (for paired comparisons between models)."""
    scores = score_labels(model, prompts, labels, batch_size, pad_id, device)
    right = scores.logprobs.argmax(-1) == truth
    loss = F.cross_entropy(scores.logprobs.log_softmax(-1), truth).item()
    outside = sum(not ok for ok in scores.greedy_in_set)
    return right.float().mean().item(), loss, outside, right.tolist()


def lora_shape(spec: TrialSpec, config: LocalLMBackendConfig) -> tuple[int, int]:
    """LoRA rank and alpha: the search space's where it samples them, else the config's."""
    rank = spec.lora_rank if spec.lora_rank is not None else config.lora_rank
    alpha = spec.lora_alpha if spec.lora_alpha is not None else config.lora_alpha
    return rank, alpha


def predictions(logprobs: torch.Tensor, labels: Sequence[str]) -> list[Prediction]:
    predictions = []
    for row in restricted(logprobs).tolist():
        best = max(range(len(row)), key=row.__getitem__)
        scores = dict(zip(labels, row, strict=True))
        predictions.append(Prediction(label=labels[best], confidence=row[best], scores=scores))
    return predictions


def check_inputs(spec: TrialSpec, data: PreparedData) -> None:
    if spec.n_epochs < 1 or spec.batch_size < 1:
        raise ValueError(
            f"need n_epochs >= 1 and batch_size >= 1, got {spec.n_epochs=}, {spec.batch_size=}"
        )
    if len(data.train) == 0 or len(data.validation) == 0:
        raise DataError(f"{data.name}: the train and validation splits must not be empty")
    unknown = sorted(set(data.train.labels) - set(data.labels))
    if unknown:
        raise DataError(f"labels {unknown} are not in the dataset's label set {list(data.labels)}")

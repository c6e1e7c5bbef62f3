"""Torch helpers for the local backend: device, padding, inference, optimizer, loading.

Kept apart from `local.py` so the backend reads as the training story and this file holds the
mechanics. Imported only by `harness.backends.local.encoder`, which is itself loaded lazily.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
import torch
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from harness.backends.local._embedding_rows import RowAdamW, RowEmbedding, row_leaves
from harness.backends.local._machine import cpu_bf16
from harness.errors import BackendError, ConfigError
from harness.records import Prediction


@dataclass(frozen=True)
class Timed:
    """A loaded model's own training step and inference, as a workload's calibration times them.

    Attributes:
        train: One optimizer step on a batch of token-id sequences.
        infer: Score sequences (their outputs copied to the CPU, as a trial does).
        vocab_size: Token ids are drawn below it.
    """

    train: Callable[[list[list[int]]], None]
    infer: Callable[[list[list[int]]], None]
    vocab_size: int


@dataclass(frozen=True)
class Workload:
    """What a backend's calibration times: its model, its step, its batch sizes.

    Attributes:
        name: Part of the cache key; empty for the encoder (keys measured before workloads).
        prepare: Load the model at a path onto a device and return its timed operations.
        train_batch: Sequences per timed training step.
        eval_batch: Sequences per inference batch.
        n_sequences: Synthetic sequences: the training batches and the inference set.
    """

    name: str
    prepare: Callable[[str, torch.device], Timed]
    train_batch: int
    eval_batch: int
    n_sequences: int


def pick_device(requested: str) -> torch.device:
    """Resolve the configured device; "auto" prefers CUDA, then Apple MPS, then the CPU.

    Raises:
        ValueError: A named accelerator is not available on this machine.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but torch sees no CUDA GPU")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: 'mps' was requested but torch sees no Apple MPS device")
    return torch.device(requested)


def use_all_cores() -> int:
    """Give torch every core this process may run on (containers often allow fewer than exist)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(cores, 1))
    return cores


def start_device(requested: str) -> tuple[torch.device, int | None]:
    """The device a local backend trains on, and the CPU threads torch was given (None off
    the CPU), for `backend.device` as configured.

    Raises:
        ConfigError: The device is not one torch knows or has here.
    """
    try:
        device = pick_device(requested)
    except ValueError as exc:
        raise ConfigError(f"backend.{exc}") from None
    return device, use_all_cores() if device.type == "cpu" else None


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA GPUs that support it (tensor cores; unlike fp16, no loss scaling)
    and on CPUs with AMX tiles (`_machine.cpu_bf16`).

    Other CPUs and MPS stay in fp32: bf16 matmuls are only fast on CPUs with AMX, and MPS support
    for bf16 autocast varies by torch and macOS version.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, left: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    """Pad token-id lists to the longest in the batch (dynamic padding) and build the mask.

    Hand-rolled rather than `tokenizer.pad`: the ids are already cached as plain lists, and this
    is one `torch.tensor` call per batch instead of a round trip through the tokenizer.
    """
    width = max(len(s) for s in sequences)
    ids: list[list[int]] = []
    mask: list[list[int]] = []
    for seq in sequences:
        gap = width - len(seq)
        ids.append([pad_id] * gap + list(seq) if left else list(seq) + [pad_id] * gap)
        mask.append([0] * gap + [1] * len(seq) if left else [1] * len(seq) + [0] * gap)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "attention_mask": torch.tensor(mask, dtype=torch.long, device=device),
    }


BUCKET_BATCHES = 50  # batches per length-sorted chunk of an epoch (see `length_batches`)


def length_batches(
    lengths: Sequence[int],
    batch_size: int,
    generator: torch.Generator,
    chunk_batches: int = BUCKET_BATCHES,
) -> list[list[int]]:
    """One epoch's batches (row indices): length-bucketed, in a seeded random order.

    The rows are shuffled, each chunk of `chunk_batches` batches is sorted by length (stably,
    so ties stay shuffled) and cut into batches, and the batches are shuffled: an epoch stays
    random, but a batch holds rows of nearly one length, so dynamic padding adds almost nothing
    (on the demo's snippets it was 45% of the tokens a batch ran). Every row is in exactly one
    batch; only the last batch may be short, so there are ceil(n / batch_size) of them.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    span = batch_size * chunk_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lengths.__getitem__)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def ordered_logits(
    model: Any,
    sequences: Sequence[Sequence[int]],
    batch_size: int,
    pad: tuple[int, bool],
    device: torch.device,
) -> torch.Tensor:
    """Logits (float32, on the CPU) for every sequence, in the order given.

    Sequences are batched shortest first so each batch pads to similar lengths, then the rows
    are put back in the caller's order.

    Args:
        model: A sequence-classification model already on `device`.
        sequences: Token ids per text, unpadded.
        batch_size: Sequences per forward pass.
        pad: The pad token id and whether padding goes on the left.
        device: Where the model lives.
    """
    out = torch.empty(len(sequences), model.config.num_labels, dtype=torch.float32)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    model.eval()
    with torch.inference_mode(), autocast(device):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = pad_batch([sequences[i] for i in rows], pad[0], pad[1], device)
            out[rows] = model(**batch).logits.float().cpu()
    return out


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar while loading a model.

    Loading an encoder into a classification model always "misses" the new head's weights; the
    report says so in a table that a sweep would print once per trial.
    """
    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def clip_gradients(model: Any, max_norm: float) -> None:
    """Clip the global gradient norm (as `transformers.Trainer` does by default), the rows of a
    lazily trained embedding (`_embedding_rows`) included.

    Scales only when the norm is over `max_norm`: `clip_grad_norm_` multiplies every gradient by
    its clamped coefficient even when that is 1.0, a pass over all of them for nothing. On the
    CPU reading the norm costs no sync, so the skip is exact and free there.
    """
    params = [p for p in model.parameters() if p.grad is not None] + row_leaves(model)
    if not params:
        return
    device = params[0].device.type
    foreach = True if device in ("cpu", "cuda") else None
    if device != "cpu":
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=foreach)
        return
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=foreach)
    if float(norm) + 1e-6 > max_norm:  # clip_grad_norm_'s coefficient is max_norm/(norm + 1e-6)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=foreach)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/host out-of-memory errors, which torch raises under several types."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@contextlib.contextmanager
def out_of_memory_as_backend_error(message: str) -> Iterator[None]:
    """Turn running out of memory into a `BackendError` with `message` (a hint the user can act
    on) instead of a traceback; any other exception passes through untouched."""
    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise BackendError(message) from None


def to_predictions(logits: torch.Tensor, names: Sequence[str]) -> list[Prediction]:
    """Softmax each row into per-label scores; the most probable label wins."""
    predictions = []
    for row in logits.softmax(dim=-1).tolist():
        best = max(range(len(row)), key=row.__getitem__)
        scores = dict(zip(names, row, strict=True))
        predictions.append(Prediction(label=names[best], confidence=row[best], scores=scores))
    return predictions


def padding_of(tokenizer: Any) -> tuple[int, bool]:
    """The pad token id and whether the tokenizer pads on the left."""
    # Encoders define a pad token; 0 is only a fallback so a model without one still runs.
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pad_id, tokenizer.padding_side == "left"


def build_optimizer(
    model: Any,
    lr: float,
    weight_decay: float,
    warmup_ratio: float,
    steps: int,
    rows: RowEmbedding | None = None,
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and a linear schedule with warmup, as in the BERT fine-tuning recipe.

    Biases and LayerNorm weights (the 1-d parameters) get no weight decay, as in the recipe and
    `transformers.Trainer`. The fused AdamW kernel is used on CPU and CUDA: on the CPU torch's
    default per-tensor implementation took 0.11 s per step for MiniLM's 22.7M parameters (longer
    than forward and backward of a small batch), the fused one 0.016 s. With `rows` (the
    model's `RowEmbedding`), its weight is trained lazily, row by row (`RowAdamW`).
    """
    dense = [p for p in model.parameters() if rows is None or p is not rows.weight]
    groups = [
        {"params": [p for p in dense if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in dense if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    optimizer: torch.optim.Optimizer
    if rows is None:
        optimizer = torch.optim.AdamW(groups, lr=lr, fused=fused or None)
    else:
        groups.append({"params": [rows.weight], "weight_decay": weight_decay})
        optimizer = RowAdamW(groups, rows, lr=lr, fused=fused or None)
    warmup = math.ceil(warmup_ratio * steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, steps)


def load_model_folder(path: str | Path, labels: Sequence[str] | None = None) -> Any:
    """A sequence-classification model from `path`, quietly.

    With `labels`, a fresh head for those labels replaces whatever head the checkpoint has (a
    plain encoder has none); without, the saved head and its `id2label` are loaded as they are.

    Raises:
        OSError: Nothing loadable at `path` (transformers' own error, for the caller to word).
        ValueError: The checkpoint is not a model transformers knows.
    """
    with quiet_transformers():
        if labels is None:
            return AutoModelForSequenceClassification.from_pretrained(path)
        id2label = dict(enumerate(labels))
        return AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(id2label),
            id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
            ignore_mismatched_sizes=True,
        )


def token_counter(tokenizer_file: Path) -> Callable[[list[str]], list[int]]:
    """Count tokens (no special tokens) with the `tokenizers` library alone: no model needed."""
    fast = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    fast.no_truncation()  # MiniLM's file truncates and pads to 128 by default
    fast.no_padding()
    return lambda texts: [len(e.ids) for e in fast.encode_batch(texts, add_special_tokens=False)]

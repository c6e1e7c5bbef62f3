"""Loading a causal LM for the local LM backend, and the workload its cost is calibrated on.

The calibration (`_calibration`) times this backend's own training step (LoRA adapters at
the default rank on every linear layer, loss on the last two tokens of each synthetic sequence as
its completion) and its own scoring (one position kept per prompt, as for single-token labels).
Batches are smaller than the encoder's: a causal LM step is an order of magnitude dearer.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.backends.local._lm_training import attach_lora, score_labels, start_lm_run, train_step
from harness.backends.local._torch_utils import Timed, Workload, quiet_transformers

CALIBRATION_RANK = 8  # the config's default; the rank barely moves the cost of a step


def load_causal_lm(path: str) -> Any:
    """A causal LM in float32 (training is in float32 on the CPU; bf16 autocast on CUDA).

    Raises:
        OSError: Nothing loadable at `path`.
        ValueError: Not a model transformers knows as a causal LM.
    """
    with quiet_transformers():
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def load_tokenizer(path: str) -> Any:
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(path)


def _prepare(path: str, device: torch.device) -> Timed:
    model = attach_lora(
        load_causal_lm(path), CALIBRATION_RANK, 2 * CALIBRATION_RANK, 0.0, "all-linear"
    )
    model = model.to(device)
    vocab = int(model.config.vocab_size)
    run = start_lm_run(model, device, [([0, 0, 0], 1)], (1e-6, 4, 100, 0.0, 0.0), 0, 0)

    def train(batch: list[list[int]]) -> None:
        model.train()
        train_step(run, [(ids, max(1, len(ids) - 2)) for ids in batch])

    def infer(sequences: list[list[int]]) -> None:
        score_labels(model, sequences, [[1]], LM_WORKLOAD.eval_batch, 0, device)

    return Timed(train, infer, vocab)


LM_WORKLOAD = Workload("causal-lm-lora", _prepare, train_batch=4, eval_batch=32, n_sequences=8)

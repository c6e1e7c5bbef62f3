"""Length-bucketed epochs (`length_batches`): every example once, random order, little padding."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import torch

from harness.backends.base import NullProgress
from harness.backends.local import _lm_training, _training
from harness.backends.local._torch_utils import length_batches


def _lengths(n: int = 1000, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(3, 64) for _ in range(n)]


def _batches(lengths: list[int], seed: int, chunk: int = 50, size: int = 16) -> list[list[int]]:
    return length_batches(lengths, size, torch.Generator().manual_seed(seed), chunk)


def _padding(lengths: list[int], batches: list[list[int]]) -> float:
    ran = sum(len(rows) * max(lengths[i] for i in rows) for rows in batches)
    return 1 - sum(lengths) / ran


def test_every_example_once_per_epoch_and_only_the_last_batch_short() -> None:
    lengths = _lengths(1003)
    batches = _batches(lengths, seed=1)
    assert sorted(i for rows in batches for i in rows) == list(range(1003))
    assert len(batches) == -(-1003 // 16)  # the schedule counts ceil(n / batch) steps
    assert sorted(len(rows) for rows in batches)[1:] == [16] * (len(batches) - 1)


def test_same_seed_same_batches_other_seed_other_order() -> None:
    lengths = _lengths()
    assert _batches(lengths, seed=3) == _batches(lengths, seed=3)
    one, other = _batches(lengths, seed=3), _batches(lengths, seed=4)
    assert one != other
    assert [sorted(rows) for rows in one] != [sorted(rows) for rows in other]


def test_batches_come_in_random_length_order() -> None:
    lengths = _lengths()
    widths = [max(lengths[i] for i in rows) for rows in _batches(lengths, seed=5)]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
    # neighbours in the epoch are not neighbours in length: the batch order was shuffled
    ups = sum(b > a for a, b in itertools.pairwise(widths))
    assert 0.3 < ups / (len(widths) - 1) < 0.7


def test_bucketing_removes_most_padding() -> None:
    lengths = _lengths()
    plain = _padding(lengths, _batches(lengths, seed=0, chunk=1))
    bucketed = _padding(lengths, _batches(lengths, seed=0))
    assert plain > 0.3  # shuffled batches of 3..64 tokens pad about a third
    assert bucketed < 0.05


def test_the_encoder_and_lm_epochs_train_on_bucketed_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lengths = _lengths(800)
    seen: dict[str, list[list[int]]] = {"encoder": [], "lm": []}

    def encoder_step(run: Any, rows: list[int]) -> torch.Tensor:
        seen["encoder"].append([len(run.ids[i]) for i in rows])
        return torch.zeros(())

    def lm_step(run: Any, rows: list[tuple[list[int], int]]) -> tuple[torch.Tensor, int]:
        seen["lm"].append([len(ids) for ids, _ in rows])
        return torch.zeros(()), 1

    monkeypatch.setattr(_training, "train_step", encoder_step)
    monkeypatch.setattr(_lm_training, "train_step", lm_step)
    ids = [[1] * k for k in lengths]
    common = {"model": torch.nn.Linear(1, 1), "device": torch.device("cpu"), "batch_size": 16}
    common |= {"optimizer": None, "scheduler": None, "generator": torch.Generator()}
    encoder = _training.Run(ids=ids, labels=torch.zeros(800), pad=(0, False), **common)
    lm = _lm_training.LMRun(examples=[(row, 1) for row in ids], pad_id=0, **common)
    _training.train_epoch(encoder, NullProgress(), "epoch")
    _lm_training.train_epoch(lm, NullProgress(), "epoch")
    for widths in seen.values():
        assert sorted(k for batch in widths for k in batch) == sorted(lengths)
        ran = sum(len(batch) * max(batch) for batch in widths)
        assert 1 - sum(lengths) / ran < 0.05
    assert encoder.trained_tokens == lm.trained_tokens == sum(lengths)

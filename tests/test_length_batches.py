"""Length-bucketed epochs (`length_batches`): every example once, random order, little padding."""

from __future__ import annotations

import random

import torch

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
    ups = sum(b > a for a, b in zip(widths, widths[1:], strict=False))
    assert 0.3 < ups / (len(widths) - 1) < 0.7


def test_bucketing_removes_most_padding() -> None:
    lengths = _lengths()
    plain = _padding(lengths, _batches(lengths, seed=0, chunk=1))
    bucketed = _padding(lengths, _batches(lengths, seed=0))
    assert plain > 0.3  # shuffled batches of 3..64 tokens pad about a third
    assert bucketed < 0.05

"""Lazy word-embedding rows (`_embedding_rows`): AdamW on the rows a batch uses, nothing else."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.backends.local._embedding_rows import RowEmbedding, lazy_input_embeddings
from harness.backends.local._torch_utils import build_optimizer, clip_gradients

VOCAB, DIM, PAD = 50, 8, 0


class _Tiny(nn.Module):
    """An embedding, a mean over tokens, a head: the shape of an encoder classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM, padding_idx=PAD)
        self.head = nn.Linear(DIM, 3)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def set_input_embeddings(self, module: nn.Module) -> None:
        self.embed = module

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).tanh().mean(dim=1))


def _pair() -> tuple[_Tiny, _Tiny]:
    torch.manual_seed(0)
    dense = _Tiny()
    lazy = _Tiny()
    lazy.load_state_dict(dense.state_dict())
    return dense, lazy


def _train(model: _Tiny, batches: list[torch.Tensor], rows: RowEmbedding | None) -> None:
    optimizer, scheduler = build_optimizer(model, 1e-2, 0.1, 0.2, len(batches), rows=rows)
    model.train()
    for i, ids in enumerate(batches):
        labels = torch.full((ids.shape[0],), i % 3)
        F.cross_entropy(model(ids), labels).backward()
        clip_gradients(model, 0.05)  # small: clipping happens, so its norm must match
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def test_rows_a_batch_uses_get_adamw_and_the_others_stay_put() -> None:
    dense, lazy = _pair()
    rows = lazy_input_embeddings(lazy)
    assert isinstance(rows, RowEmbedding) and rows.weight is lazy.embed.weight
    # Every batch uses the same tokens (and padding): there dense AdamW and lazy rows agree.
    used = torch.tensor([[3, 7, 7, 12, PAD], [12, 40, 3, PAD, PAD]])
    _train(dense, [used] * 6, None)
    _train(lazy, [used] * 6, rows)
    seen = torch.tensor([3, 7, 12, 40])
    torch.testing.assert_close(lazy.embed.weight[seen], dense.embed.weight[seen])
    torch.testing.assert_close(lazy.head.weight, dense.head.weight)
    torch.testing.assert_close(lazy.head.bias, dense.head.bias)
    # Unused rows and the padding row: dense AdamW decays them, lazy rows leave them as loaded.
    _, start = _pair()
    others = torch.tensor([i for i in range(VOCAB) if i not in (3, 7, 12, 40)])
    assert torch.equal(lazy.embed.weight[others], start.embed.weight[others])
    assert not torch.equal(dense.embed.weight[others], start.embed.weight[others])


def test_a_row_moves_on_the_steps_that_use_it_only() -> None:
    _, lazy = _pair()
    rows = lazy_input_embeddings(lazy)
    # The first step warms up at learning rate 0; the next two use rows 5, 6, then 6, 9.
    _train(lazy, [torch.tensor([[5, 6]]), torch.tensor([[5, 6]]), torch.tensor([[6, 9]])], rows)
    _, start = _pair()
    weight = lazy.embed.weight.detach()
    assert all(not torch.equal(weight[i], start.embed.weight[i]) for i in (5, 6, 9))
    assert torch.equal(weight[1], start.embed.weight[1])  # never used


def test_eval_and_inference_are_a_plain_embedding() -> None:
    _, lazy = _pair()
    rows = lazy_input_embeddings(lazy)
    assert rows is not None
    ids = torch.tensor([[4, 2, PAD]])
    lazy.eval()
    with torch.inference_mode():
        out = lazy(ids)
    assert rows.touched is None
    torch.testing.assert_close(out, lazy.head(F.embedding(ids, lazy.embed.weight).tanh().mean(1)))
    assert set(lazy.state_dict()) == {"embed.weight", "head.weight", "head.bias"}


def test_frozen_or_sparse_embeddings_are_left_alone() -> None:
    model = _Tiny()
    model.embed.weight.requires_grad_(False)
    assert lazy_input_embeddings(model) is None
    model = _Tiny()
    model.embed.sparse = True
    assert lazy_input_embeddings(model) is None
    assert type(model.embed) is nn.Embedding

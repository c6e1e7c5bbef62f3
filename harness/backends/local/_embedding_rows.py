"""Lazy word-embedding updates: each step trains only the rows of the tokens its batch uses.

MiniLM's word embeddings (30,522 x 384) are half its parameters, yet a batch of 16 snippets
uses a few hundred rows. Trained densely, every step zero-fills and scatters a 47 MB gradient,
then clipping reads and scales it and AdamW reads and writes it, its two moments and the weight:
about a tenth of a step on 2 CPU cores (22 of 228 ms, measured per phase, best of 5).
Here the forward gathers the batch's rows into a small leaf tensor, backward fills the gradient
of those rows only, and `RowAdamW` applies AdamW to them.

What is trained differs from dense AdamW only on rows a batch does not use ("lazy Adam", as
TensorFlow Addons' `LazyAdam`): dense AdamW still moves such a row by its decaying momentum
(if an earlier batch used it) and shrinks it by weight decay (lr x weight_decay of its value per
step, 2e-6 at the demo's settings); here it stays as it is until a batch uses it again. On the
rows a batch uses, the update is AdamW's (bias correction by the optimizer's global step), and
global-norm clipping sees the same norm (the rows left out have zero gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class RowEmbedding(nn.Embedding):
    """An `nn.Embedding` whose training forward leaves the batch's rows in `touched` (a leaf
    tensor, one row per distinct token id in `rows`), so backward never builds a dense gradient
    for `weight`; outside training (or without grad) it is a plain embedding."""

    rows: torch.Tensor | None = None
    touched: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(ids)
        rows, inverse = torch.unique(ids, return_inverse=True)
        touched = self.weight.detach()[rows].requires_grad_()
        if self.padding_idx is not None:  # as nn.Embedding: the padding row gets no gradient
            touched.register_hook(_zero_row(rows == self.padding_idx))
        self.rows, self.touched = rows, touched
        return F.embedding(inverse, touched)


def _zero_row(mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda grad: grad.masked_fill(mask.unsqueeze(1), 0.0)


def lazy_input_embeddings(model: Any) -> RowEmbedding | None:
    """Swap the model's input embeddings for a `RowEmbedding` over the same weight (same
    parameter name, so a saved model is unchanged); None where they are not a plain trainable
    `nn.Embedding` (frozen, sparse, max-norm, or not found), which stays as it was.

    Only on the CPU, where the dense update is memory-bound and costs a tenth of a step: on a
    GPU it takes well under a millisecond, and `torch.unique` would sync every step.
    """
    get = getattr(model, "get_input_embeddings", None)
    old = get() if get is not None else None
    if (
        type(old) is not nn.Embedding
        or old.weight.device.type != "cpu"
        or not old.weight.requires_grad
        or old.sparse
        or old.max_norm is not None
        or old.scale_grad_by_freq
    ):
        return None
    new = RowEmbedding(old.num_embeddings, old.embedding_dim, old.padding_idx, _weight=old.weight)
    new.weight = old.weight  # the very parameter: anything else holding it stays tied
    new.train(old.training)
    model.set_input_embeddings(new)
    return new


def row_leaves(model: Any) -> list[torch.Tensor]:
    """The `touched` leaves of the model's `RowEmbedding`s that hold a gradient (for clipping)."""
    modules: Iterable[Any] = model.modules() if hasattr(model, "modules") else ()
    return [
        m.touched
        for m in modules
        if isinstance(m, RowEmbedding) and m.touched is not None and m.touched.grad is not None
    ]


class RowAdamW(torch.optim.AdamW):
    """AdamW, with lazy row-wise AdamW (see the module doc) for the weight of `embedding`.

    That weight sits in its own parameter group (so the schedule sets its learning rate as it
    sets the others'); it never has a `.grad`, so AdamW's own step skips it and `step` then
    updates the rows the last forward used, from the gradient of `embedding.touched`.
    """

    def __init__(self, groups: list[dict[str, Any]], embedding: RowEmbedding, **kw: Any) -> None:
        super().__init__(groups, **kw)
        self.embedding = embedding

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = super().step(closure)
        emb = self.embedding
        if emb.rows is not None and emb.touched is not None and emb.touched.grad is not None:
            group = next(g for g in self.param_groups if g["params"][0] is emb.weight)
            with torch.no_grad():
                _adamw_rows(self.state[emb.weight], emb.weight, emb.rows, emb.touched.grad, group)
        emb.rows = emb.touched = None  # a step uses a forward's rows once
        return loss


def _adamw_rows(
    state: dict[str, Any],
    weight: torch.Tensor,
    rows: torch.Tensor,
    grad: torch.Tensor,
    group: dict[str, Any],
) -> None:
    """`torch.optim.AdamW`'s update (same order of operations), on `weight[rows]` only."""
    if not state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(weight)
        state["exp_avg_sq"] = torch.zeros_like(weight)
    state["step"] += 1
    step = float(state["step"])
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    param = weight.detach()[rows]
    exp_avg, exp_avg_sq = state["exp_avg"][rows], state["exp_avg_sq"][rows]
    param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
    weight.detach().index_copy_(0, rows, param)
    state["exp_avg"].index_copy_(0, rows, exp_avg)
    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)

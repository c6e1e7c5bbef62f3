"""Test-set scores from predictions: pure functions over label strings, built on scikit-learn.

Also the compact record of which examples a model got right (`pack_correct`): every model is
scored on the same validation examples, so two models are compared paired, example by example.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from harness.records import Metrics


def score(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], ordinal: bool
) -> Metrics:
    """Accuracy, macro / weighted F1 and, for ordinal labels, mean absolute error.

    A prediction outside `labels` counts as wrong (it is never dropped). MAE treats a prediction
    outside the label set as the farthest possible error, so it cannot flatter a model.
    """
    if len(y_true) != len(y_pred) or not y_true:
        raise ValueError(f"need equal, non-empty sequences, got {len(y_true)=} {len(y_pred)=}")
    label_list = list(labels)
    return Metrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(
            f1_score(y_true, y_pred, labels=label_list, average="macro", zero_division=0)
        ),
        weighted_f1=float(
            f1_score(y_true, y_pred, labels=label_list, average="weighted", zero_division=0)
        ),
        mae=_ordinal_mae(y_true, y_pred, label_list) if ordinal else None,
        n_examples=len(y_true),
        out_of_set=sum(1 for p in y_pred if p not in set(label_list)),
    )


def _ordinal_mae(y_true: Sequence[str], y_pred: Sequence[str], labels: list[str]) -> float:
    """Numbers (stars) at their own distances; words (`ordinal: true` over `labels: [bad, ok,
    good]`) one step apart in the order of the label set."""
    try:
        values = {label: float(label) for label in labels}
    except ValueError:
        values = {label: float(rank) for rank, label in enumerate(labels)}
    worst = max(values.values()) - min(values.values())
    errors = [
        abs(values[t] - values[p]) if p in values else worst
        for t, p in zip(y_true, y_pred, strict=True)
    ]
    return float(np.mean(errors))


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Confusion matrix, rows = true label, columns = predicted label, in `labels` order; an
    example whose true or predicted label is outside `labels` is left out (as sklearn's
    `confusion_matrix(labels=...)` does, whose input checks take ten times as long)."""
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(index), len(index)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            counts[index[t], index[p]] += 1
    return counts


def report_text(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> str:
    """scikit-learn's per-class precision / recall / F1 table, as `classification_report(...,
    digits=4, zero_division=0)` writes it, for true labels within `labels` (predictions may fall
    outside; they count as misses, and the accuracy row becomes a micro average, as sklearn's).

    Computed from three count vectors in one pass: sklearn's call re-checks its string inputs for
    each of its four score computations, which took ten times as long, once per trial.
    """
    names = list(labels)
    index = {label: i for i, label in enumerate(names)}
    tp, true, pred = (np.zeros(len(names), dtype=np.int64) for _ in range(3))
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index:
            true[index[t]] += 1
        if p in index:
            pred[index[p]] += 1
            tp[index[p]] += t == p
    precision, recall, f1 = _prf(tp, true, pred)
    width = max(*(len(name) for name in names), len("weighted avg"), 4)
    row = "{:>{width}s} " + " {:>9.4f}" * 3 + " {:>9}\n"
    lines = ["{:>{width}s} ".format("", width=width), *(f" {h:>9}" for h in _HEADERS), "\n\n"]
    for name, *scores in zip(names, precision, recall, f1, true, strict=True):
        lines.append(row.format(name, *scores, width=width))
    lines.append("\n")
    support = int(true.sum())
    micro = [float(v[0]) for v in _prf(tp.sum(keepdims=True), [support], [pred.sum()])]
    if set(names) >= {*y_true, *y_pred}:  # every answer in the label set: micro = accuracy
        accuracy_row = "{:>{width}s} " + " {:>9}" * 2 + " {:>9.4f} {:>9}\n"
        lines.append(accuracy_row.format("accuracy", "", "", micro[2], support, width=width))
    else:
        lines.append(row.format("micro avg", *micro, support, width=width))
    macro = [float(np.mean(v)) for v in (precision, recall, f1)]
    lines.append(row.format("macro avg", *macro, support, width=width))
    weighted = [float(np.average(v, weights=true)) for v in (precision, recall, f1)]
    lines.append(row.format("weighted avg", *weighted, support, width=width))
    return "".join(lines)


_HEADERS = ("precision", "recall", "f1-score", "support")


def _prf(
    tp: np.ndarray, true: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class, 0 where undefined (sklearn's `zero_division=0`), with
    sklearn's own arithmetic (F1 as `2 tp / (true + pred)`), so the table rounds as its does."""
    true_f, pred_f, tp_f = (np.asarray(v, dtype=np.float64) for v in (true, pred, tp))
    return _divide(tp_f, pred_f), _divide(tp_f, true_f), _divide(2.0 * tp_f, true_f + pred_f)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    zero = denominator == 0
    result = numerator / np.where(zero, 1.0, denominator)
    result[zero] = 0.0
    return result


def pack_correct(y_true: Sequence[str], y_pred: Sequence[str]) -> str:
    """Which examples were right, as `"<count>:<base64 of the packed bits>"`: 600 examples take
    105 characters, small enough for a trial's record in the study storage."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"need equal sequences, got {len(y_true)=} {len(y_pred)=}")
    return pack_bits(np.asarray([t == p for t, p in zip(y_true, y_pred, strict=True)]))


def pack_bits(correct: Sequence[bool] | np.ndarray) -> str:
    """`pack_correct` for a boolean vector already computed."""
    bits = np.asarray(correct, dtype=bool)
    packed = base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")
    return f"{bits.size}:{packed}"


def unpack_correct(packed: str) -> np.ndarray:
    """The boolean vector `pack_correct` packed.

    Raises:
        ValueError: `packed` is not in that format.
    """
    count, _, text = packed.partition(":")
    if not count.isdigit() or not text:
        raise ValueError(f"not a packed correctness vector: {packed[:40]!r}")
    raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    bits = np.unpackbits(raw)[: int(count)].astype(bool)
    if bits.size != int(count):
        raise ValueError(f"packed vector shorter than its count {count}")
    return bits

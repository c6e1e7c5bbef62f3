"""Test-set scores from predictions: pure functions over label strings, built on scikit-learn.

Also the compact record of which examples a model got right (`pack_correct`): every model is
scored on the same validation examples, so two models are compared paired, example by example.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import sklearn
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

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
    """Confusion matrix, rows = true label, columns = predicted label, in `labels` order."""
    return confusion_matrix(y_true, y_pred, labels=list(labels))


def report_text(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> str:
    """scikit-learn's per-class precision / recall / F1 table."""
    # The inputs are ours and already checked; sklearn's validation is most of the call's time.
    with sklearn.config_context(skip_parameter_validation=True):
        return str(
            classification_report(y_true, y_pred, labels=list(labels), digits=4, zero_division=0)
        )


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

"""A trial's artifacts drawn the cheap way show what the expensive way showed: the classification
report as scikit-learn writes it, the predictions table as pandas writes it, and the confusion
matrix image as a fresh matplotlib figure draws it."""

from __future__ import annotations

import random

import pytest
import sklearn
from sklearn.metrics import classification_report

from harness.scoring import report_text

LABEL_POOL = ("fresh", "rotten", "1", "2", "3", "4", "5", "neutral", "a-rather-long-label-name")


def _sklearn_report(y_true: list[str], y_pred: list[str], labels: tuple[str, ...]) -> str:
    with sklearn.config_context(skip_parameter_validation=True):
        text = classification_report(y_true, y_pred, labels=list(labels), digits=4, zero_division=0)
    return str(text)


def _case(seed: int) -> tuple[list[str], list[str], tuple[str, ...]]:
    """Random labels and answers, some outside the label set, at least one right."""
    rng = random.Random(seed)
    labels = tuple(rng.sample(LABEL_POOL, rng.randint(1, 6)))
    y_true = [rng.choice(labels) for _ in range(rng.randint(1, 80))]
    strays = ("", "other") if seed % 3 == 0 else ()
    y_pred = [rng.choice(labels + strays) if rng.random() < 0.5 else t for t in y_true]
    y_pred[0] = y_true[0]
    return y_true, y_pred, labels


@pytest.mark.parametrize("seed", range(200))
def test_the_report_is_sklearns_table(seed: int) -> None:
    y_true, y_pred, labels = _case(seed)
    assert report_text(y_true, y_pred, labels) == _sklearn_report(y_true, y_pred, labels)


def test_a_report_with_no_right_answer_counts_support_in_whole_examples() -> None:
    # sklearn writes "2.0" here (its counts turn float when nothing is right); a count is whole.
    text = report_text(["fresh", "rotten"], ["rotten", "other"], ("fresh", "rotten"))
    rows = [line.split() for line in text.splitlines() if line.strip()]
    assert [row[-1] for row in rows[1:]] == ["1", "1", "2", "2", "2"]
    assert rows[3][0] == "micro" and rows[3][2:5] == ["0.0000"] * 3  # an answer was off the set

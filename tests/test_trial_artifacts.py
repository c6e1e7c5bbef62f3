"""A trial's artifacts drawn the cheap way show what the expensive way showed: the classification
report as scikit-learn writes it, the predictions table as pandas writes it, and the confusion
matrix image as a fresh matplotlib figure draws it."""

from __future__ import annotations

import io
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import sklearn
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import classification_report, confusion_matrix

from harness.records import Prediction, Split
from harness.scoring import confusion, report_text
from harness.tracking.artifacts import CONFUSION_DPI, confusion_png, predictions_csv
from tests.conftest import prepared, review_rows

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


@pytest.mark.parametrize("seed", range(50))
@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn, on a one-label case
def test_the_confusion_matrix_is_sklearns(seed: int) -> None:
    y_true, y_pred, labels = _case(seed)
    expected = confusion_matrix(y_true, y_pred, labels=list(labels))
    assert np.array_equal(confusion(y_true, y_pred, labels), expected)


def test_a_report_with_no_right_answer_counts_support_in_whole_examples() -> None:
    # sklearn writes "2.0" here (its counts turn float when nothing is right); a count is whole.
    text = report_text(["fresh", "rotten"], ["rotten", "other"], ("fresh", "rotten"))
    rows = [line.split() for line in text.splitlines() if line.strip()]
    assert [row[-1] for row in rows[1:]] == ["1", "1", "2", "2", "2"]
    assert rows[3][0] == "micro" and rows[3][2:5] == ["0.0000"] * 3  # an answer was off the set


def test_the_predictions_table_is_pandas_csv() -> None:
    data = prepared(review_rows(20, seed=2), ("negative", "positive"), "f" * 64, "csv")
    texts = ('says "great", then, no', "two\nlines", " leading space", "naïve ünïcode", "")
    data = replace(data, test=Split(texts, data.test.labels[:5]))
    predictions = [
        Prediction("positive", 0.123456),
        Prediction("negative", 1.0),
        Prediction("off the set", 0.5),
        Prediction("positive", 1e-05),
        Prediction("negative", 0.99995),
    ]
    table = pd.DataFrame(
        {
            "text": data.test.texts,
            "true": data.test.labels,
            "predicted": [p.label for p in predictions],
            "confidence": [round(p.confidence, 4) for p in predictions],
            "correct": [t == p.label for t, p in zip(data.test.labels, predictions, strict=True)],
            "in_label_set": [p.label in data.labels for p in predictions],
        }
    )
    assert predictions_csv(data, predictions) == table.to_csv(index=False)


def _drawn_afresh(counts: np.ndarray, labels: tuple[str, ...], title: str) -> np.ndarray:
    """The confusion matrix as a new figure per trial drew it (before the blitted canvas; its
    title now spans the figure, not the axes, wrapped to its width)."""
    size = 2.5 + 0.6 * len(labels)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    fig.text(0.5, 0.985, title, ha="center", va="top", fontsize=9, wrap=True)
    low, high = int(counts.min()), int(counts.max())
    for (row, column), n in np.ndenumerate(counts):
        dark = high > low and (int(n) - low) / (high - low) > 0.5
        ax.text(column, row, str(n), ha="center", va="center", color="white" if dark else "black")
    fig.subplots_adjust(left=0.28, bottom=0.24, right=0.96, top=0.9)
    out = io.BytesIO()
    fig.savefig(out, dpi=CONFUSION_DPI)
    rgba = np.asarray(Image.open(out))
    assert (rgba[..., 3] == 255).all()  # opaque: nothing is lost without the alpha channel
    return rgba[..., :3]


def test_the_confusion_image_is_the_figure_drawn_afresh() -> None:
    rng = np.random.default_rng(5)
    label_sets = [("fresh", "rotten"), ("1", "2", "3", "4", "5"), ("negative", "neutral", "x")]
    # Label sets in turn (each keeps its own canvas), counts and titles changing every time.
    for number, labels in enumerate(label_sets * 2):
        n = len(labels)
        counts = rng.integers(0, 150, size=(n, n)) if number != 1 else np.full((n, n), 7)
        title = f"t{number:03d} ep=1 lr=0.{number}7 bs=16 n=400 all-MiniLM-L6-v2"
        if number == 3:  # a checkpoint's name is longer: wrapped to two lines
            title += f" @ epoch 1 of t00{number - 1}"
        image = Image.open(io.BytesIO(confusion_png(counts, labels, title)))
        side = round((2.5 + 0.6 * n) * CONFUSION_DPI)
        assert image.size == (side, side) and image.format == "PNG"
        assert round(image.info["dpi"][0]) == CONFUSION_DPI
        assert np.array_equal(np.asarray(image), _drawn_afresh(counts, labels, title))


def test_the_confusion_image_title_stays_inside_the_figure() -> None:
    counts = np.array([[120, 31], [38, 112]])
    title = "t003 ep=1 lr=1.37 bs=16 n=400 all-MiniLM-L6-v2"  # ran off a 2-label figure
    pixels = np.asarray(Image.open(io.BytesIO(confusion_png(counts, ("fresh", "rotten"), title))))
    top = pixels[: round(0.1 * pixels.shape[0])]  # above the axes: the title's band
    inked = np.flatnonzero((top < 128).any(axis=(0, 2)))
    assert inked.size and inked.min() > 4 and inked.max() < pixels.shape[1] - 5


def test_labels_with_dollar_signs_are_drawn_as_written() -> None:
    # Found by QA: matplotlib reads text between two `$` as mathtext, so price-level labels
    # (`$`, `$$`, `$$$`: Yelp's) failed the sweep's artifact drawing with a ParseException, and
    # `$5-$10` was drawn as the italic formula `5 - 10`, its dollars gone.
    counts = np.array([[5, 1, 0, 0], [2, 6, 1, 0], [0, 1, 7, 2], [0, 0, 3, 4]])
    png = confusion_png(counts, ("$", "$$", "$$$", "$$$$"), "t000")
    assert Image.open(io.BytesIO(png)).format == "PNG"
    labels = ("under $5", "$5-$10", "over $10")
    pixels = np.asarray(Image.open(io.BytesIO(confusion_png(counts[:3, :3], labels, "t001"))))
    # `\$` is matplotlib's own escape for a literal dollar sign.
    literal = tuple(label.replace("$", r"\$") for label in labels)
    assert np.array_equal(pixels, _drawn_afresh(counts[:3, :3], literal, "t001"))

"""A trial's artifacts: the predictions table, the confusion matrix and the classification report,
for a qualitative look at the mistakes beside the numbers.

They are written once per trial, inside the sweep's time, so each is made the cheap way: the
table with the `csv` module, the report from counts (`harness.scoring.report_text`), and the
image on a matplotlib figure drawn once per label set, whose fixed parts (axes, ticks, axis
labels) are kept as pixels and only the cells, their numbers and the title are drawn per trial.
"""

from __future__ import annotations

import csv
import functools
import io
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.records import Prediction, PreparedData, TrialResult
from harness.scoring import confusion, report_text

if TYPE_CHECKING:
    import numpy as np

PREDICTIONS = "predictions.csv"
CONFUSION_DPI = 110
_COLUMNS = ("text", "true", "predicted", "confidence", "correct", "in_label_set")


def predictions_csv(data: PreparedData, predictions: Sequence[Prediction]) -> str:
    """The test set beside its predictions, for a qualitative look at the mistakes: one row per
    example (text, true, predicted, confidence to 4 places, correct, in_label_set), as pandas'
    `to_csv(index=False)` writes that table."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_COLUMNS)
    labels = set(data.labels)
    for text, true, p in zip(data.test.texts, data.test.labels, predictions, strict=True):
        writer.writerow(
            (text, true, p.label, round(p.confidence, 4), true == p.label, p.label in labels)
        )
    return out.getvalue()


def write_trial_artifacts(result: TrialResult, data: PreparedData, out: Path) -> list[Path]:
    """Predictions table, confusion matrix image and classification report for one trial."""
    predicted = [p.label for p in result.predictions]
    paths = [
        out / PREDICTIONS,
        out / "classification_report.txt",
        out / "confusion_matrix.png",
    ]
    paths[0].write_text(predictions_csv(data, result.predictions), encoding="utf-8")
    paths[1].write_text(report_text(data.test.labels, predicted, data.labels), encoding="utf-8")
    counts = confusion(data.test.labels, predicted, data.labels)
    paths[2].write_bytes(confusion_png(counts, data.labels, result.spec.run_name()))
    return paths


def prepare_plotting(labels: tuple[str, ...]) -> None:
    """Import what drawing artifacts needs and lay out the confusion matrix's figure for
    `labels`, once per sweep, not inside the first trial."""
    import sklearn.metrics  # noqa: F401

    _canvas(labels)


def confusion_png(counts: np.ndarray, labels: tuple[str, ...], title: str) -> bytes:
    """The confusion matrix (rows true, columns predicted) as a PNG: cells shaded on the Blues
    scale from the smallest count to the largest, each with its count, the title above."""
    canvas = _canvas(labels)
    with canvas.lock:
        return canvas.draw(counts, title)


@functools.lru_cache(maxsize=4)
def _canvas(labels: tuple[str, ...]) -> _ConfusionCanvas:
    return _ConfusionCanvas(labels)


class _ConfusionCanvas:
    """A figure for one label set: its fixed parts rendered once and kept as pixels; the
    changing artists (cells, numbers, title, and the frame over the cells) are `animated`, left
    out of that rendering and drawn over a copy of it per trial (matplotlib's blitting)."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        # The object-oriented Figure API, no pyplot: no global state, no GUI backend.
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.lock = threading.Lock()
        n = len(labels)
        size = 2.5 + 0.6 * n
        self.figure = Figure(figsize=(size, size), dpi=CONFUSION_DPI)
        self.agg = FigureCanvasAgg(self.figure)
        ax = self.axes = self.figure.add_subplot()
        self.image = ax.imshow(np.zeros((n, n)), cmap="Blues", animated=True)
        ticks = range(n)
        # Labels are the user's data, drawn as written: matplotlib would read text between two
        # `$` as a formula (`$5-$10` drawn `5 - 10`; `$$` a parse error).
        ax.set_xticks(ticks, labels, rotation=45, ha="right", parse_math=False)
        ax.set_yticks(ticks, labels, parse_math=False)
        ax.set_xlabel("Predicted label")
        ax.set_ylabel("True label")
        # The run name, centred on the figure and wrapped to its width: over the axes alone
        # (`set_title`), a name like `t003 ep=1 lr=1.37 bs=16 n=400 all-MiniLM-L6-v2` ran off
        # the right edge of a two-label figure.
        self.title = self.figure.text(
            0.5,
            0.985,
            "",
            ha="center",
            va="top",
            fontsize=9,
            wrap=True,
            animated=True,
            parse_math=False,
        )
        self.numbers = {
            (row, column): ax.text(column, row, "", ha="center", va="center", animated=True)
            for row in range(n)
            for column in range(n)
        }
        self.spines = list(ax.spines.values())
        for spine in self.spines:
            spine.set_animated(True)
        self.figure.subplots_adjust(left=0.28, bottom=0.24, right=0.96, top=0.9)
        self.agg.draw()
        self.background = self.agg.copy_from_bbox(self.figure.bbox)

    def draw(self, counts: np.ndarray, title: str) -> bytes:
        low, high = int(counts.min()), int(counts.max())
        self.image.set_data(counts)
        self.image.set_clim(low, high)  # as `imshow(counts)` scales: min to max
        self.title.set_text(title)
        for (row, column), text in self.numbers.items():
            n = int(counts[row, column])
            # White text on the darker half of the colour scale.
            dark = high > low and (n - low) / (high - low) > 0.5
            text.set_text(str(n))
            text.set_color("white" if dark else "black")
        self.agg.restore_region(self.background)
        # In the order a full draw takes them (by zorder): cells, frame, numbers, title.
        for artist in [self.image, *self.spines, *self.numbers.values()]:
            self.axes.draw_artist(artist)
        self.figure.draw_artist(self.title)
        return _png(self.agg)


def _png(agg: Any) -> bytes:
    """The canvas's pixels as an RGB PNG with its dpi. The figure is opaque, so the alpha
    channel `savefig` would write is all 255; without it, and at zlib level 1, encoding takes half
    the time of `savefig`'s for a file of the same size (15 KB for two labels)."""
    from PIL import Image

    size = agg.get_width_height(physical=True)
    image = Image.frombytes("RGB", size, agg.buffer_rgba(), "raw", "RGBX")
    out = io.BytesIO()
    image.save(out, format="png", dpi=(CONFUSION_DPI, CONFUSION_DPI), compress_level=1)
    return out.getvalue()

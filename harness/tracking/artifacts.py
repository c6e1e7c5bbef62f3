"""A trial's artifacts: the predictions table, the confusion matrix and the classification report,
for a qualitative look at the mistakes beside the numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.records import Prediction, PreparedData, TrialResult
from harness.scoring import confusion, report_text

if TYPE_CHECKING:
    import pandas as pd

PREDICTIONS = "predictions.csv"


def predictions_table(data: PreparedData, predictions: Sequence[Prediction]) -> pd.DataFrame:
    """The test set beside its predictions, for a qualitative look at the mistakes."""
    import pandas as pd

    predicted = [p.label for p in predictions]
    return pd.DataFrame(
        {
            "text": data.test.texts,
            "true": data.test.labels,
            "predicted": predicted,
            "confidence": [round(p.confidence, 4) for p in predictions],
            "correct": [t == p for t, p in zip(data.test.labels, predicted, strict=True)],
            "in_label_set": [p in data.labels for p in predicted],
        }
    )


def write_trial_artifacts(result: TrialResult, data: PreparedData, out: Path) -> list[Path]:
    """Predictions table, confusion matrix image and classification report for one trial."""
    predicted = [p.label for p in result.predictions]
    table = predictions_table(data, result.predictions)
    paths = [
        out / PREDICTIONS,
        out / "classification_report.txt",
        out / "confusion_matrix.png",
    ]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(report_text(data.test.labels, predicted, data.labels), encoding="utf-8")
    _plot_confusion(data.test.labels, predicted, data.labels, paths[2], result.spec.run_name())
    return paths


def import_plotting() -> None:
    """Import what drawing artifacts needs once per sweep, not inside the first trial."""
    import matplotlib.figure  # noqa: F401
    import sklearn.metrics  # noqa: F401


def _plot_confusion(
    y_true: tuple[str, ...], y_pred: list[str], labels: tuple[str, ...], path: Path, title: str
) -> None:
    # The object-oriented Figure API, no pyplot: no global state, no GUI backend, and a third of
    # the time of `ConfusionMatrixDisplay` + `tight_layout`, which matters once per trial.
    import numpy as np
    from matplotlib.figure import Figure

    counts = confusion(y_true, y_pred, labels)
    size = 2.5 + 0.6 * len(labels)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title, fontsize=9)
    low, high = int(counts.min()), int(counts.max())
    for (row, column), n in np.ndenumerate(counts):
        # White text on the darker half of the colour scale (imshow spans min to max).
        dark = high > low and (int(n) - low) / (high - low) > 0.5
        ax.text(column, row, str(n), ha="center", va="center", color="white" if dark else "black")
    fig.subplots_adjust(left=0.28, bottom=0.24, right=0.96, top=0.9)
    fig.savefig(path, dpi=110)

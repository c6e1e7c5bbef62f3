"""A trial that asks for more training examples than the split has is logged with the size used.

Issue 13: `train_examples: 1200` was shown and logged when only 210 training rows existed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.config import load_experiment
from harness.records import Cost, Metrics, TrainedModel, TrialResult, TrialSpec
from harness.tracking.record import result_attrs, used_train_examples
from harness.tracking.runs import TRAIN_EXAMPLES_WARNING_TAG, MlflowTracker
from tests.conftest import prepared, review_rows, write_experiment

LABELS = ("negative", "positive")


def test_the_used_size_is_capped_at_the_rows_available() -> None:
    assert used_train_examples(1200, 210) == 210
    assert used_train_examples(100, 210) == 100
    assert used_train_examples(None, 210) == 210  # "all" is the split's size
    assert used_train_examples(1200, None) == 1200  # rows unknown: as asked


def test_start_trial_logs_the_rows_used_and_warns(tmp_path: Path, tiny_csv: Path) -> None:
    experiment = load_experiment(str(write_experiment(tmp_path, tiny_csv)))
    data = prepared(review_rows(20), LABELS, "d" * 64, "tiny")  # 24 training rows
    tracker = MlflowTracker(experiment, data, None)
    tracker.start_study(experiment.study_name, {})
    asked = TrialSpec(0, 1, 1.0, 8, "all-MiniLM-L6-v2", train_examples=1200)

    capped = tracker.client.get_run(tracker.start_trial(asked, "local"))
    assert capped.data.params["train_examples"] == "24"
    assert capped.data.params["train_examples_requested"] == "1200"
    warning = capped.data.tags[TRAIN_EXAMPLES_WARNING_TAG]
    assert "1200" in warning and "24" in warning
    assert capped.info.run_name.endswith("n=24")

    for number, size, logged in ((1, 10, "10"), (2, None, "24")):
        spec = replace(asked, number=number, train_examples=size)
        run = tracker.client.get_run(tracker.start_trial(spec, "local"))
        assert run.data.params["train_examples"] == logged
        assert "train_examples_requested" not in run.data.params
        assert TRAIN_EXAMPLES_WARNING_TAG not in run.data.tags


def test_result_attrs_record_the_rows_used() -> None:
    result = TrialResult(
        spec=TrialSpec(0, 1, 1.0, 8, "all-MiniLM-L6-v2", train_examples=1200),
        model=TrainedModel(model_ref="ref", epochs=(), train_cost=Cost()),
        metrics=Metrics(accuracy=0.5, macro_f1=0.5, weighted_f1=0.5, mae=None, n_examples=8),
        eval_cost=Cost(),
        wall_seconds=1.0,
        predictions=(),
    )
    assert result_attrs(result, train_rows=210)["train_examples"] == 210
    fewer = replace(result, spec=replace(result.spec, train_examples=100))
    assert result_attrs(fewer, train_rows=210)["train_examples"] == 100

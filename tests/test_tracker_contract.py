"""The tracker contract (`tests/tracker_contract.py`) run against every tracker: MLflow on a
real sqlite store in a temp folder, and the null tracker."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from harness.config import load_experiment
from harness.tracking.runs import MlflowTracker
from harness.tracking.tracker import NullTracker, Tracker
from tests.conftest import prepared, review_rows, write_experiment
from tests.tracker_contract import RunView, TrackerCase, TrackerContract

LABELS = ("negative", "positive")


class TestMlflowTracker(TrackerContract):
    @pytest.fixture
    def case(self, tmp_path: Path, tiny_csv: Path) -> TrackerCase:
        experiment = load_experiment(str(write_experiment(tmp_path, tiny_csv)))
        data = prepared(review_rows(20, seed=4), LABELS, "e" * 64, "contract")
        trackers: list[MlflowTracker] = []

        def make(parent: str | None) -> Tracker:
            trackers.append(MlflowTracker(experiment, data, parent))
            return trackers[-1]

        def read(run_id: str) -> RunView:
            client = trackers[0].client
            run = client.get_run(run_id)
            metrics = {
                key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
                for key in run.data.metrics
            }
            texts = {}
            with tempfile.TemporaryDirectory() as tmp:
                for item in client.list_artifacts(run_id):
                    if item.path.endswith((".txt", ".md")):
                        path = client.download_artifacts(run_id, item.path, tmp)
                        texts[item.path] = Path(path).read_text(encoding="utf-8")
            return RunView(run.info.status, run.data.params, run.data.tags, metrics, texts)

        return TrackerCase(make, data, records=True, read=read, folder=tmp_path)


class TestNullTracker(TrackerContract):
    @pytest.fixture
    def case(self, tmp_path: Path) -> TrackerCase:
        data = prepared(review_rows(20, seed=4), LABELS, "e" * 64, "contract")

        def read(run_id: str) -> RunView:
            raise AssertionError("a tracker that records nothing has no run to read")

        return TrackerCase(
            lambda parent: NullTracker(), data, records=False, read=read, folder=tmp_path
        )

"""MLflow tracking: one parent run per study, one child run per trial.

Everything goes through `MlflowClient` with explicit run ids rather than the fluent
`mlflow.start_run` stack, so trials running in threads (remote backends) never log into each
other's runs. `NullTracker` has the same methods and does nothing, for library use.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness.backends.base import PreparedData
from harness.config import DEFAULT_TRACKING_URI, Experiment
from harness.mlflow_store import ensure_sqlite_store
from harness.provenance import provenance_tags, run_provenance
from harness.records import EpochResult, Prediction, TrialResult, TrialSpec

if TYPE_CHECKING:
    import pandas as pd

STUDY_TAG = "harness.study"
TRIAL_TAG = "harness.trial_number"
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|authorization)", re.IGNORECASE)


def tracking_uri(experiment: Experiment | None = None) -> str:
    """`MLFLOW_TRACKING_URI` wins, then the experiment's `tracking.uri`, then the sqlite default."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return absolute_sqlite(env)
    if experiment is not None and experiment.config.tracking.uri:
        return absolute_sqlite(experiment.config.tracking.uri)
    return absolute_sqlite(DEFAULT_TRACKING_URI)


def absolute_sqlite(uri: str) -> str:
    """`sqlite:///mlruns/x.db` relative to the current directory, made absolute.

    MLflow caches stores by URI string, so two relative URIs from two directories in one process
    would otherwise share the first directory's database.
    """
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri.removeprefix("sqlite:///")
        if path != ":memory:" and not path.startswith("/"):
            return "sqlite:///" + str(Path(path).expanduser().resolve())
    return uri


def chart_view_links(uri: str, base_url: str) -> dict[str, str]:
    """Per experiment, a UI link that lists every trial flat (sorted by test accuracy) in the
    chart view; MLflow 3 otherwise opens on an overview page with trials folded under studies."""
    from mlflow import MlflowClient

    links = {}
    for exp in MlflowClient(tracking_uri=uri).search_experiments():
        if exp.name == "Default":
            continue
        links[exp.name] = (
            f"{base_url}/#/experiments/{exp.experiment_id}/runs?"
            "orderByKey=metrics.%60test_accuracy%60&orderByAsc=false&compareRunsMode=CHART"
        )
    return links


def redact(value: Any) -> Any:
    """Copy of a config structure with anything that looks like a credential blanked out."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a local sqlite store instead of MLflow's cwd-relative default."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
        return (db.parent / "artifacts").as_uri()
    return None


class NullTracker:
    """A tracker that records nothing."""

    def start_study(self, study_name: str, search_space: dict[str, Any]) -> str | None:
        return None

    def start_trial(
        self,
        spec: TrialSpec,
        backend: str,
        name: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> str | None:
        return None

    def log_epoch(self, run_id: str | None, epoch: EpochResult) -> None:
        pass

    def tag(self, run_id: str | None, key: str, value: str) -> None:
        pass

    def log_step_metrics(self, run_id: str | None, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_text(self, run_id: str | None, text: str, artifact_file: str) -> None:
        pass

    def finish_trial(self, run_id: str | None, result: TrialResult, data: PreparedData) -> None:
        pass

    def fail_trial(self, run_id: str | None, reason: str, status: str = "FAILED") -> None:
        pass

    def mark_pareto(self, run_ids: dict[str, bool]) -> None:
        pass

    def finish_study(self, artifacts: dict[str, str] | None = None) -> None:
        pass


class MlflowTracker(NullTracker):
    """Logs a study and its trials to an MLflow tracking store."""

    def __init__(self, experiment: Experiment, data: PreparedData, parent_run_id: str | None):
        import mlflow
        from mlflow import MlflowClient

        _import_plotting()  # once per sweep, not inside the first trial's logging

        self._mlflow = mlflow
        self.uri = tracking_uri(experiment)
        ensure_sqlite_store(self.uri)  # a new local store from a template: ms, not seconds
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = experiment
        self.data = data
        self.experiment_id = self._experiment_id()
        self.parent_run_id = parent_run_id
        self.provenance = run_provenance()  # once per sweep: code and versions do not change

    def _experiment_id(self) -> str:
        name = self.experiment.config.tracking.experiment_name or self.experiment.name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        return self.client.create_experiment(name, artifact_location=_artifact_root(self.uri))

    def start_study(self, study_name: str, search_space: dict[str, Any]) -> str:
        """Create the parent run, or reopen it when the study is resumed."""
        if self.parent_run_id and self._run_exists(self.parent_run_id):
            self.client.update_run(self.parent_run_id, status="RUNNING")
            return self.parent_run_id
        tags = {
            STUDY_TAG: study_name,
            "harness.experiment_file": str(self.experiment.path),
            **provenance_tags(self.experiment.config.seed, self.data.digest, info=self.provenance),
        }
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"study {study_name}")
        self.parent_run_id = run.info.run_id
        self.client.log_dict(self.parent_run_id, redact(self.experiment.raw), "config.yaml")
        self.client.log_dict(self.parent_run_id, search_space, "search_space.json")
        self._log_dataset(self.parent_run_id)
        return self.parent_run_id

    def _run_exists(self, run_id: str) -> bool:
        try:
            run = self.client.get_run(run_id)
        except self._mlflow.exceptions.MlflowException:
            return False
        return run.info.lifecycle_stage == "active"

    def _log_dataset(self, run_id: str) -> None:
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        splits = {
            "train": self.data.train,
            "validation": self.data.validation,
            "test": self.data.test,
        }
        frame = pd.concat(
            pd.DataFrame({"text": s.texts, "label": s.labels, "split": name})
            for name, s in splits.items()
        )
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.pandas_dataset import from_pandas

        dataset = from_pandas(
            frame,
            # The frame is built by harness (deduped, split) from the configured source.
            source=CodeDatasetSource(tags={"source": self.experiment.config.dataset.source}),
            targets="label",
            name=self.data.name,
            digest=self.data.digest[:20],
        )
        tag = InputTag(key="mlflow.data.context", value="train/validation/test")
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), [tag])])

    def start_trial(
        self,
        spec: TrialSpec,
        backend: str,
        name: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> str:
        """Open the trial's child run, named `name` or after its spec (`t007 ep=3 ...`), with
        its params and any `metrics` known up front (step 0) in one batch."""
        import time

        from mlflow.entities import Metric, Param

        tags = {
            "mlflow.parentRunId": self.parent_run_id or "",
            STUDY_TAG: self.experiment.study_name,
            TRIAL_TAG: str(spec.number),
            **provenance_tags(spec.seed, self.data.digest, info=self.provenance),
        }
        run = self.client.create_run(
            self.experiment_id, tags=tags, run_name=name or spec.run_name()
        )
        run_id = run.info.run_id
        params = {**spec.params(), "backend": backend, "seed": spec.seed}
        params["train_examples"] = spec.train_examples or len(self.data.train)
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
        )
        return run_id

    def tag(self, run_id: str | None, key: str, value: str) -> None:
        if run_id is not None:
            self.client.set_tag(run_id, key, value)

    def log_step_metrics(self, run_id: str | None, metrics: Mapping[str, float], step: int) -> None:
        if run_id is not None:
            self._log_metrics(run_id, dict(metrics), step=step)

    def log_text(self, run_id: str | None, text: str, artifact_file: str) -> None:
        if run_id is not None:
            self.client.log_text(run_id, text, artifact_file)

    def log_epoch(self, run_id: str | None, epoch: EpochResult) -> None:
        if run_id is None:
            return
        values = {
            "valid_accuracy": epoch.valid_accuracy,
            "valid_loss": epoch.valid_loss,
            "train_loss": epoch.train_loss,
            "epoch_cost_usd": epoch.cost_so_far.usd,
            "checkpoint_test_accuracy": epoch.test_accuracy,
        }
        self._log_metrics(run_id, values, step=epoch.epoch)

    def _log_metrics(
        self,
        run_id: str,
        values: Mapping[str, float | None],
        step: int = 0,
        tags: Sequence[Any] = (),
    ) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        self.client.log_batch(run_id, metrics=metrics, tags=list(tags))

    def finish_trial(self, run_id: str | None, result: TrialResult, data: PreparedData) -> None:
        if run_id is None:
            return
        from mlflow.entities import RunTag

        tags = {
            "fine_tuned_model": result.model.model_ref,
            "stopped_early": str(result.model.stopped_early).lower(),
        }
        if result.model.job_id:
            tags["job_id"] = result.model.job_id
        # One batch for metrics and tags, one copy for the artifacts: each call is a transaction.
        self._log_metrics(
            run_id, trial_metrics(result), tags=[RunTag(k, v) for k, v in tags.items()]
        )
        with tempfile.TemporaryDirectory() as tmp:
            write_trial_artifacts(result, data, Path(tmp))
            # The resolved config beside them (the study's run has it too, from its start).
            config = yaml.safe_dump(redact(self.experiment.raw), sort_keys=False)
            (Path(tmp) / "config.yaml").write_text(config, encoding="utf-8")
            self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, "FINISHED")

    def fail_trial(self, run_id: str | None, reason: str, status: str = "FAILED") -> None:
        if run_id is None or not self._run_exists(run_id):
            return
        self.client.set_tag(run_id, "failure_reason", reason[:5000])
        self.client.set_terminated(run_id, status)

    def mark_pareto(self, run_ids: dict[str, bool]) -> None:
        for run_id, on_front in run_ids.items():
            if self._run_exists(run_id):
                self.client.set_tag(run_id, "pareto", str(on_front).lower())

    def finish_study(self, artifacts: dict[str, str] | None = None) -> None:
        if not self.parent_run_id:
            return
        for name, text in (artifacts or {}).items():
            self.client.log_text(self.parent_run_id, text, name)
        self.client.set_terminated(self.parent_run_id, "FINISHED")


def trial_metrics(result: TrialResult) -> dict[str, float | None]:
    """The scalar metrics of a finished trial, under the names DESIGN.md gives."""
    total = result.total_cost
    return {
        "test_accuracy": result.metrics.accuracy,
        "test_macro_f1": result.metrics.macro_f1,
        "test_weighted_f1": result.metrics.weighted_f1,
        "test_mae": result.metrics.mae,
        "test_out_of_set": float(result.metrics.out_of_set),
        "cost_usd": total.usd,
        "train_cost_usd": result.model.train_cost.usd,
        "eval_cost_usd": result.eval_cost.usd,
        "trained_tokens": float(total.trained_tokens),
        "compute_seconds": total.compute_seconds,
        "wall_seconds": result.wall_seconds,
        "epochs_trained": float(len(result.model.epochs)),
    }


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
    from harness.scoring import report_text

    predicted = [p.label for p in result.predictions]
    table = predictions_table(data, result.predictions)
    paths = [
        out / "predictions.csv",
        out / "classification_report.txt",
        out / "confusion_matrix.png",
    ]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(report_text(data.test.labels, predicted, data.labels), encoding="utf-8")
    _plot_confusion(data.test.labels, predicted, data.labels, paths[2], result.spec.run_name())
    return paths


def _import_plotting() -> None:
    import matplotlib.figure  # noqa: F401
    import sklearn.metrics  # noqa: F401


def _plot_confusion(
    y_true: tuple[str, ...], y_pred: list[str], labels: tuple[str, ...], path: Path, title: str
) -> None:
    # The object-oriented Figure API, no pyplot: no global state, no GUI backend, and a third of
    # the time of `ConfusionMatrixDisplay` + `tight_layout`, which matters once per trial.
    import numpy as np
    from matplotlib.figure import Figure

    from harness.scoring import confusion

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

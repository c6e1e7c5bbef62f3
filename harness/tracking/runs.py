"""The MLflow tracker: one parent run per study, one child run per trial.

`MlflowTracker` implements the `Tracker` protocol (`harness.tracking.tracker`) without inheriting
from `NullTracker`, so a method it forgets is a type error, not a silent no-op.

Everything goes through `MlflowClient` with explicit run ids rather than the fluent
`mlflow.start_run` stack, so trials running in threads (remote backends) never log into each
other's runs.
"""

from __future__ import annotations

import functools
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from harness.config import Experiment
from harness.locations import redact_text
from harness.records import EpochResult, PreparedData, TrialResult, TrialSpec
from harness.tracking.artifacts import prepare_plotting, write_trial_artifacts
from harness.tracking.provenance import provenance_tags, run_provenance
from harness.tracking.record import (
    FAILURE_REASON_TAG,
    MODEL_FILES,
    PARETO_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    epoch_metrics,
    trial_metrics,
    trial_tags,
    used_train_examples,
)
from harness.tracking.store import ensure_experiment, ensure_sqlite_store, tracking_uri

# Set on a trial run whose spec asked for more training examples than the split has.
TRAIN_EXAMPLES_WARNING_TAG = "harness.train_examples_capped"
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|authorization)", re.IGNORECASE)


def redact(value: Any) -> Any:
    """Copy of a config structure with anything that looks like a credential blanked out: values
    of keys named like secrets, and passwords inside URLs (`postgresql://user:***@host/db`)."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


# How long recording an epoch checkpoint's run may take (its trial is added to the study only
# after: logging its epochs, and on a tracking server copying its model's files); an unnumbered
# run older than this was left by a worker that died while recording it.
RECORDING_GRACE_S = 15 * 60


class MlflowTracker:
    """Logs a study and its trials to an MLflow tracking store."""

    def __init__(self, experiment: Experiment, data: PreparedData, parent_run_id: str | None):
        import mlflow
        from mlflow import MlflowClient

        prepare_plotting(data.labels)  # once per sweep, not inside the first trial's logging

        self._mlflow = mlflow
        self.uri = tracking_uri(experiment)
        ensure_sqlite_store(self.uri)  # a new local store from a template: ms, not seconds
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = experiment
        self.data = data
        self.experiment_id = self._experiment_id()
        self.parent_run_id = parent_run_id
        self.provenance = run_provenance()  # once per sweep: code and versions do not change
        self._dataset_input: Any = None  # built on first use (`_log_dataset`)
        self._artifact_uris: dict[str, str] = {}  # trial runs this tracker opened -> their root

    def _experiment_id(self) -> str:
        name = self.experiment.config.tracking.experiment_name or self.experiment.name
        return ensure_experiment(self.client, name)

    def start_study(
        self, study_name: str, search_space: dict[str, Any], run_id: str | None = None
    ) -> str:
        """Create the parent run, or reopen it (`run_id`, else the one the tracker was given)
        when the study is resumed or another worker created it."""
        self.parent_run_id = run_id or self.parent_run_id
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
        """The prepared data as the run's MLflow input (its Datasets on the run's page); built
        once, logged on the study's run and on every trial's."""
        if self._dataset_input is None:
            self._dataset_input = self._build_dataset_input()
        self.client.log_inputs(run_id, datasets=[self._dataset_input])

    def _build_dataset_input(self) -> Any:
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
            source=CodeDatasetSource(
                tags={"source": redact_text(self.experiment.config.dataset.source)}
            ),
            targets="label",
            name=self.data.name,
            digest=self.data.digest[:20],
        )
        tag = InputTag(key="mlflow.data.context", value="train/validation/test")
        return DatasetInput(dataset._to_mlflow_entity(), [tag])

    def start_trial(
        self,
        spec: TrialSpec,
        backend: str,
        name: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> str:
        """Open the trial's child run, named `name` or after its spec (`t007 ep=3 ...`), with
        its params and any `metrics` known up front (step 0) in one batch.

        `train_examples` is logged as the size the trial trains on: a spec asking for more rows
        than the training split has is capped at the split (as the backends cap it), and the
        size it asked for is kept as `train_examples_requested`, with a warning tag.
        """
        from mlflow.entities import Metric, Param

        available = len(self.data.train)
        used = used_train_examples(spec.train_examples, available)
        capped = spec.train_examples is not None and spec.train_examples > available
        tags = {
            "mlflow.parentRunId": self.parent_run_id or "",
            STUDY_TAG: self.experiment.study_name,
            TRIAL_TAG: str(spec.number),
            **provenance_tags(spec.seed, self.data.digest, info=self.provenance),
        }
        if capped:
            tags[TRAIN_EXAMPLES_WARNING_TAG] = (
                f"asked for {spec.train_examples} training examples; "
                f"the training split has {available}, so all {available} were used"
            )
        shown = replace(spec, train_examples=used) if capped else spec  # the run name says n=
        # A given name built on the spec's own (a checkpoint's `t012 ... @ epoch 1 of t007`)
        # says n= as used too, like its trial's.
        run_name = (
            shown.run_name() if name is None else name.replace(spec.run_name(), shown.run_name(), 1)
        )
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=run_name)
        run_id = run.info.run_id
        self._artifact_uris[run_id] = run.info.artifact_uri
        self._log_dataset(run_id)
        params = {**spec.params(), "backend": backend, "seed": spec.seed}
        params["train_examples"] = used
        if capped:
            params["train_examples_requested"] = spec.train_examples
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
        self._log_metrics(run_id, epoch_metrics(epoch), step=epoch.epoch)

    def _log_metrics(
        self,
        run_id: str,
        values: Mapping[str, float | None],
        step: int = 0,
        tags: Sequence[Any] = (),
    ) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        self.client.log_batch(run_id, metrics=metrics, tags=list(tags))

    def finish_trial(self, run_id: str | None, result: TrialResult, data: PreparedData) -> None:
        if run_id is None:
            return
        from mlflow.entities import RunTag

        tags = trial_tags(result)
        # One batch for metrics and tags, one copy for the artifacts: each call is a transaction.
        self._log_metrics(
            run_id, trial_metrics(result), tags=[RunTag(k, v) for k, v in tags.items()]
        )
        with tempfile.TemporaryDirectory() as tmp:
            write_trial_artifacts(result, data, Path(tmp))
            # The resolved config beside them (the study's run has it too, from its start).
            (Path(tmp) / "config.yaml").write_text(self._config_yaml, encoding="utf-8")
            self._log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, "FINISHED")
        # A worker starting meanwhile may have taken the open run for a dead worker's
        # (`close_abandoned_runs`: a checkpoint's run has no trial until it is logged).
        if FAILURE_REASON_TAG in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, FAILURE_REASON_TAG)

    def _log_artifacts(self, run_id: str, folder: str) -> None:
        """`client.log_artifacts(run_id, folder)` without the run lookup it makes to find the
        run's artifact root, where this tracker opened the run and kept the root it was given
        (a query of the run with all its tags, params and metrics: milliseconds per trial)."""
        root = self._artifact_uris.pop(run_id, None)
        if root is None:
            self.client.log_artifacts(run_id, folder)
            return
        # As the client opens the root it looks up (`TrackingServiceClient._get_artifact_repo`).
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

        root = add_databricks_profile_info_to_artifact_uri(root, self.uri)
        get_artifact_repository(root, tracking_uri=self.uri).log_artifacts(folder)

    @functools.cached_property
    def _config_yaml(self) -> str:
        """The resolved config as every trial's run shows it: the same for the whole sweep."""
        return yaml.safe_dump(redact(self.experiment.raw), sort_keys=False)

    def fail_trial(self, run_id: str | None, reason: str, status: str = "FAILED") -> None:
        if run_id is None or not self._run_exists(run_id):
            return
        self._artifact_uris.pop(run_id, None)
        self.client.set_tag(run_id, FAILURE_REASON_TAG, redact_text(reason)[:5000])
        self.client.set_terminated(run_id, status)

    @property
    def shares_files(self) -> bool:
        # A local store is on this machine, beside the models already: copying every trial's
        # weights (90 MB for MiniLM) there would only double the disk used.
        return self.uri.startswith(("http://", "https://"))

    def log_model_files(self, run_id: str | None, files: Mapping[str, str]) -> None:
        if run_id is None or not self.shares_files:
            return
        for name, path in files.items():
            self.client.log_artifacts(run_id, path, artifact_path=f"{MODEL_FILES}/{name}")

    def close_abandoned_runs(
        self,
        running: set[int],
        numbered: int | None = None,
        failed: Mapping[int, tuple[str, str]] | None = None,
    ) -> int:
        now_ms = time.time() * 1000
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{STUDY_TAG}` = '{self.experiment.study_name}' "
                "and attributes.status = 'RUNNING'"
            ),
        )
        closed = 0
        for run in found:
            number = run.data.tags.get(TRIAL_TAG)
            if number is None or not number.isdigit() or int(number) in running:
                continue  # the study's own run, or a trial some worker still runs
            young = now_ms - run.info.start_time < RECORDING_GRACE_S * 1000
            if numbered is not None and int(number) >= numbered and young:
                continue  # a checkpoint being recorded: its trial is added after its run
            if self.client.get_run(run.info.run_id).info.status != "RUNNING":
                continue  # its worker finished it since: alive after all
            died = ("worker died before recording this run", "KILLED")
            self.fail_trial(run.info.run_id, *(failed or {}).get(int(number), died))
            closed += 1
        return closed

    def mark_pareto(self, run_ids: dict[str, bool]) -> None:
        for run_id, on_front in run_ids.items():
            for attempt in range(3):
                try:
                    if self._run_exists(run_id):
                        self.client.set_tag(run_id, PARETO_TAG, str(on_front).lower())
                    break
                except self._mlflow.exceptions.MlflowException:
                    # Another worker wrote the same tag at the same moment (a unique violation
                    # in the store): the tag is there; look again, then leave it to them.
                    time.sleep(0.1 * (attempt + 1))

    def finish_study(self, artifacts: dict[str, str] | None = None) -> None:
        if not self.parent_run_id:
            return
        for name, text in (artifacts or {}).items():
            self.client.log_text(self.parent_run_id, text, name)
        self.client.set_terminated(self.parent_run_id, "FINISHED")

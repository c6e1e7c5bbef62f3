"""What a report writes to MLflow: the study's report on its parent run and the front's tags on
the trial runs (`harness report`), and a comparison's run of its own (`harness compare`).

The report package decides what to say; this module is where it is written, so every MLflow write
of the harness lives in `harness.tracking`. Both functions return what could not be logged, in
words, rather than raising: a report is still written to disk when MLflow refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.tracking.record import REPORT_FRONT_TAG
from harness.tracking.store import ensure_experiment, open_store

COMPARE_EXPERIMENT = "harness-compare"
REPORT_FOLDER = "report"  # the files' folder among a run's artifacts


@dataclass(frozen=True)
class FrontMark:
    """One trial run of a report, and whether it is on the report's front."""

    name: str  # as the report names the trial (messages)
    run_id: str | None
    on_front: bool


@dataclass(frozen=True)
class Answer:
    """A comparison's answer as its run records it (params None are logged empty)."""

    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, object] = field(default_factory=dict)


def log_study_report(
    uri: str, parent_run_id: str | None, files: Iterable[Path], marks: Iterable[FrontMark]
) -> list[str]:
    """Log the report's files on the study's parent run (under `report/`) and tag every trial
    run `harness.report_front=true|false` (the study's own `pareto` tag is left alone).

    Returns:
        What could not be done, in words (an empty list when everything was logged).
    """
    from mlflow.exceptions import MlflowException

    client = open_store(uri)
    if client is None:
        return [f"not logged to MLflow: no tracking store at {uri}"]
    problems = []
    if parent_run_id:
        try:
            for path in files:
                client.log_artifact(parent_run_id, str(path), artifact_path=REPORT_FOLDER)
        except MlflowException as exc:
            problems.append(f"not logged on parent run {parent_run_id}: {exc.message}")
    else:
        problems.append(
            "not logged to MLflow: the study has no parent run (swept without tracking)"
        )
    for mark in marks:
        if mark.run_id:
            try:
                client.set_tag(mark.run_id, REPORT_FRONT_TAG, str(mark.on_front).lower())
            except MlflowException:
                problems.append(f"{mark.name}: MLflow run {mark.run_id} is gone; not tagged")
    return problems


def log_comparison(
    uri: str,
    run_name: str,
    tags: Mapping[str, str],
    write: Callable[[str | None], dict[str, Path]],
    answer: Answer,
) -> tuple[dict[str, Path], list[str]]:
    """Open a run `run_name` with `tags` in the experiment `harness-compare` of the store at
    `uri`, have `write(run_id)` write the report's files, log them under `report/` with the
    answer, and end the run FINISHED (FAILED when writing or logging raised). `write` is called
    with None, and the files are still written, when the run cannot be opened.

    Returns:
        The files written, and what could not be logged, in words (empty when all was).
    """
    from mlflow.exceptions import MlflowException

    client = open_store(uri)
    if client is None:
        return write(None), [f"not logged to MLflow: no tracking store at {uri}"]
    try:
        experiment_id = ensure_experiment(client, COMPARE_EXPERIMENT)
        run_id = client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
    except MlflowException as exc:
        return write(None), [f"not logged to MLflow: {exc.message}"]
    status = "FAILED"
    try:
        paths = write(run_id)
        for path in paths.values():
            client.log_artifact(run_id, str(path), artifact_path=REPORT_FOLDER)
        for key, value in answer.tags.items():
            client.set_tag(run_id, key, value)
        for metric, number in answer.metrics.items():
            client.log_metric(run_id, metric, number)
        for param, setting in answer.params.items():
            client.log_param(run_id, param, "" if setting is None else setting)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return paths, []

"""The report: is paying more for fine-tuning buying real accuracy?

`build_report` reads a study (finished or still running) and the trials' test-set predictions from
MLflow, adds the baselines (scored on the same validation and test sets), finds the Pareto front
of validation accuracy against cost, prices and tests every step along it on validation, walks it
to a recommendation, checks that once on the test set, and adds the cost of running each model
for a month. `write_report` renders it (markdown, self-contained HTML, charts) and
`log_report` attaches it to the study's parent MLflow run and tags the front's trial runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from harness.backends.base import SERVING_HOSTING_NOTE
from harness.config import Experiment
from harness.errors import ConfigError, HarnessError
from harness.locations import path_component
from harness.report.answer import answer_lines, step_line, synthetic_lines
from harness.report.baselines import Baseline, compute_baselines, unweighed_evaluations
from harness.report.evidence import ValidationComparison
from harness.report.front import comparer, evidence_of, front_steps, recommend
from harness.report.model import (
    Ownership,
    Report,
    ReportOptions,
    Step,
    TrialRow,
)
from harness.report.render import render_files
from harness.report.sections import (
    HOURS_PER_MONTH,
    epoch_summaries,
    ownership,
    qualitative_sample,
)
from harness.sweep.pareto import pareto_front
from harness.sweep.study import completed_trials, load_existing_study, sweep_command
from harness.tracking.journal import ran_on_a_test_server
from harness.tracking.record import MLFLOW_RUN_ID, TrialRecord, journal_key
from harness.tracking.reports import FrontMark, log_study_report
from harness.tracking.store import open_store, tracking_uri

__all__ = [
    "Report",
    "ReportOptions",
    "Step",
    "TrialRow",
    "analyse",
    "build_report",
    "default_out_dir",
    "log_report",
    "pareto_front",
    "study_rows",
    "summary_lines",
    "write_report",
]

PREDICTIONS = "predictions.csv"


# --- gathering -------------------------------------------------------------------------------


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar per artifact: the report prints its own summary."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = before if before is not None else "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)


def _read_predictions(client: Any, run_id: str | None, tmp: str) -> pd.DataFrame | None:
    if client is None or not run_id:
        return None
    try:
        with _quiet_downloads():
            path = client.download_artifacts(run_id, PREDICTIONS, str(Path(tmp) / run_id))
    except Exception:  # MLflow raises several types for a missing run or artifact
        return None
    frame = pd.read_csv(
        path, dtype={"text": str, "true": str, "predicted": str}, keep_default_na=False
    )
    frame["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce")
    return frame


def _rows(experiment: Experiment, trials: list[FrozenTrial], client: Any) -> list[TrialRow]:
    fixed = _fixed_params(experiment)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in sorted(trials, key=lambda t: t.number):
            record = TrialRecord.from_attrs(t.user_attrs)
            run_id = record.mlflow_run_id
            params = {**fixed, **t.params}
            if record.train_examples is not None and "train_examples" in params:
                params["train_examples"] = record.train_examples  # the size used, not asked
            rows.append(
                TrialRow(
                    number=t.number,
                    params=params,
                    accuracy=_or(record.test_accuracy, t.values[0]),
                    cost=_or(record.cost_usd, t.values[1] if len(t.values) > 1 else 0.0),
                    record=record,
                    run_id=run_id,
                    predictions=_read_predictions(client, run_id, tmp),
                    valid_accuracy=record.selection_accuracy,
                    serving_hosting_per_hour=_serving_rate(t.user_attrs),
                    synthetic=ran_on_a_test_server([t]),
                )
            )
    return rows


def _serving_rate(attrs: dict[str, Any]) -> float | None:
    """The hourly hosting a trial's backend noted its model bills once served (see
    `SERVING_HOSTING_NOTE`), where it noted one."""
    note = attrs.get(journal_key(SERVING_HOSTING_NOTE))
    try:
        return float(note) if note else None
    except ValueError:
        return None


def _or(value: float | None, default: float) -> float:
    return float(value if value is not None else default)


def _fixed_params(experiment: Experiment) -> dict[str, Any]:
    from harness.sweep.search_space import experiment_space

    try:
        return experiment_space(experiment).fixed
    except HarnessError:
        return {}


def _align(rows: list[TrialRow], notes: list[str]) -> pd.DataFrame | None:
    """The test set the trials were scored on; drop predictions scored on a different one.

    The newest trial's test set is the reference: it is the one the dataset gives now.
    """
    missing = [r.name for r in rows if r.predictions is None]
    scored = [r for r in rows if r.predictions is not None]
    if not scored:
        notes.append(f"No trial has a {PREDICTIONS} artifact in MLflow: no significance tests.")
        return None
    if missing:
        notes.append(f"No predictions in MLflow for {', '.join(missing)}: no paired tests there.")
    reference = scored[-1].predictions[["text", "true"]]  # type: ignore[index]
    for row in scored:
        if not row.predictions[["text", "true"]].equals(reference):  # type: ignore[index]
            notes.append(f"{row.name} was scored on a different test set: no paired tests there.")
            row.predictions = None
    return reference


def build_report(experiment: Experiment, options: ReportOptions | None = None) -> Report:
    """Gather the study and its predictions and analyse them.

    Args:
        experiment: The validated experiment whose study to report.
        options: Monthly volume, value per accuracy point, budget and statistics settings.

    Returns:
        The report, ready for `write_report`.

    Raises:
        ConfigError: The study does not exist or has no completed trial yet.
    """
    options = options or ReportOptions()
    rows, running, parent_run_id = study_rows(experiment)
    report = analyse(experiment, rows, options)
    report.running = running
    report.tracking_uri = tracking_uri(experiment)
    report.parent_run_id = parent_run_id
    return report


def study_rows(experiment: Experiment) -> tuple[list[TrialRow], int, str | None]:
    """The study's completed trials as report rows, each with its test predictions from MLflow;
    the number of trials still running; the study's parent MLflow run.

    Raises:
        ConfigError: The study does not exist or has no completed trial yet.
    """
    study = load_existing_study(experiment)
    trials = completed_trials(study)
    if not trials:
        raise ConfigError(
            f"no completed trials yet in study {experiment.study_name!r}: "
            f"run `{sweep_command(experiment)}` first"
        )
    rows = _rows(experiment, trials, open_store(tracking_uri(experiment)))
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return rows, running, study.user_attrs.get(MLFLOW_RUN_ID)


def analyse(
    experiment: Experiment,
    rows: list[TrialRow],
    options: ReportOptions,
    others: Sequence[Experiment] = (),
) -> Report:
    """The report on `rows` (one study's, or several studies' on the same data with unique
    `number`s, as `harness.report.compare` gives them, `others` the studies after the first):
    the baselines of `experiment`'s data (models `harness evaluate` scored for any of them
    included), the front, its steps, the walk and its test-set check, ownership, epochs and a
    sample."""
    notes: list[str] = []
    reference = _align(rows, notes)
    n_test = len(reference) if reference is not None else None
    own = frozenset(r.record.model_ref for r in rows if r.record.model_ref)
    baselines, n_valid = compute_baselines(experiment, reference, notes, own, others)
    candidates = rows + baseline_rows(baselines)
    selected_on = _selection_basis(candidates, notes)
    if n_valid is None and selected_on == "validation":
        notes.append(
            "The validation size is not known (the dataset could not be prepared as the trials "
            "saw it): steps along the front are decided by the point estimate, untested."
        )
    _note_unpaired(candidates, n_valid, notes)
    owned = ownership(rows, n_test, options.monthly_requests)
    if options.weigh_running:  # before the front: it is formed on what the choice weighs
        _weigh_running(rows, owned)
        _weigh_serving(candidates, options.monthly_requests)
    front = _front(candidates)
    for row in front:
        row.on_front = True
    compare = comparer(options)
    recommendation = recommend(front, options, compare, n_valid, candidates)
    shown = recommendation.fine_tuned if recommendation.chosen.is_baseline else None
    chosen = shown or recommendation.chosen
    neighbour = _cheaper_neighbour(front, chosen)
    return Report(
        study=experiment.study_name,
        options=options,
        trials=rows,
        front=front,
        steps=front_steps(front, n_valid, options, candidates),
        baselines=baselines,
        baseline_comparisons=_against_baseline(rows, candidates, n_valid, options.alpha),
        ownership=owned,
        epochs=epoch_summaries(rows),
        recommendation=recommendation,
        neighbour=neighbour,
        sample=qualitative_sample(chosen, neighbour, options.sample_size, options.seed),
        n_test=n_test,
        backend=experiment.config.backend.kind,
        notes=notes,
        n_valid=n_valid,
        selected_on=selected_on,
    )


def _note_unpaired(candidates: list[TrialRow], n_valid: int | None, notes: list[str]) -> None:
    """Say when validation comparisons cannot be paired, and which trials are why."""
    if not n_valid:
        return
    missing = [
        r.name for r in candidates if r.valid_correct is None or len(r.valid_correct) != n_valid
    ]
    if missing:
        notes.append(
            f"No record of which validation examples {', '.join(missing)} got right (recorded "
            "before the harness kept it): every validation comparison is unpaired, as if the "
            "models had been scored on different examples, which is less precise."
        )


def _weigh_running(rows: list[TrialRow], owned: list[Ownership]) -> None:
    """Have the choice weigh each trial's first year of ownership (training, then 12 months of
    serving and hosting at the stated volume); baselines run for next to nothing (they weigh
    their own cost, and their cost is quoted as it is)."""
    by_number = {o.number: o for o in owned}
    for row in rows:
        own = by_number.get(row.number)
        year = own.months(12) if own is not None else None
        row.decision_cost = year if year is not None else row.cost


def _weigh_serving(candidates: list[TrialRow], monthly_requests: int | None) -> None:
    """A baseline billed per request (a hosted model `harness evaluate` scored) weighs its
    first year too: what scoring it cost, then 12 months of requests at its rate per example,
    and of hosting where its model is served from a deployment billed by the hour (as a
    trial's cost of ownership counts it, `harness.report.sections.ownership`)."""
    if monthly_requests is None:
        return
    for row in candidates:
        served = row.baseline
        if served is not None and served.per_request is not None:
            hosting = (served.hosting_per_hour or 0.0) * HOURS_PER_MONTH
            row.decision_cost = row.cost + 12 * (monthly_requests * served.per_request + hosting)


def baseline_rows(baselines: list[Baseline]) -> list[TrialRow]:
    """The scored baselines as candidates of the front (numbered -1, -2, ...)."""
    scored = [b for b in baselines if b.candidate]
    return [
        TrialRow(
            number=-(i + 1),
            params={},
            accuracy=float(b.accuracy or 0.0),
            cost=float(b.cost or 0.0),
            record=TrialRecord(),
            run_id=None,
            valid_accuracy=b.valid_accuracy,
            baseline=b,
            synthetic=b.synthetic,
        )
        for i, b in enumerate(scored)
    ]


def _selection_basis(candidates: list[TrialRow], notes: list[str]) -> str:
    """Validation, unless some candidate has no validation accuracy: then all are compared on
    test (one basis for all), and the report says the choice is biased."""
    missing = [r.name for r in candidates if r.valid_accuracy is None]
    if not missing:
        return "validation"
    for row in candidates:
        row.valid_accuracy = None
    notes.append(
        f"No validation accuracy recorded for {', '.join(missing)}: the front and the choice are "
        "formed on test accuracy, so the chosen model's test accuracy overstates it a little."
    )
    return "test"


def _front(rows: list[TrialRow]) -> list[TrialRow]:
    """The Pareto front of selection accuracy against what the choice weighs (the first year's
    cost of ownership where a volume was given, else the sweep's cost), cheapest first."""
    return [rows[i] for i in pareto_front([(r.selection_accuracy, r.weighed_cost) for r in rows])]


def _cheaper_neighbour(front: list[TrialRow], row: TrialRow) -> TrialRow | None:
    """The next cheaper front member with test predictions (for the side-by-side sample)."""
    below = front[: front.index(row)] if row in front else []
    return next((r for r in reversed(below) if r.predictions is not None), None)


def _against_baseline(
    rows: list[TrialRow], candidates: list[TrialRow], n_valid: int | None, alpha: float
) -> dict[int, ValidationComparison]:
    """Every trial against the best baseline on validation (paired where both recorded their
    answers), two-sided at `alpha`."""
    scored = [i for i, r in enumerate(candidates) if r.is_baseline]
    if not scored or not n_valid:
        return {}
    best = max(scored, key=lambda i: candidates[i].selection_accuracy)
    evidence = evidence_of(candidates, n_valid, alpha)
    comparisons = {}
    for i, row in enumerate(candidates):
        if row.is_baseline or row.valid_accuracy is None:
            continue
        comparison = evidence.compare(best, i, alpha / 2)
        if comparison is not None:
            comparisons[row.number] = comparison
    return comparisons


# --- output ----------------------------------------------------------------------------------


def default_out_dir(experiment: Experiment) -> Path:
    """`mlruns/reports/STUDY`: named after the study, not the file, since one file makes many
    studies (`--set study.name=...`) and each would overwrite the others' report; one folder
    whatever the name holds (`path_component`)."""
    return Path("mlruns") / "reports" / path_component(experiment.study_name)


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write report.md, report.html (self-contained), the charts and trials.csv into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return render_files(report, out_dir)


def log_report(report: Report, paths: dict[str, Path]) -> list[str]:
    """Log the files on the study's parent run and tag every trial run (and a baseline's
    `harness evaluate` run; one no longer weighed, `false`) with whether it is on the front
    (`harness.report_front=true|false`; the study's own `pareto` tag, trials only, is the
    sweep's and is left alone).

    Returns:
        What could not be done, in words (an empty list when everything was logged).
    """
    marks = [FrontMark(row.name, row.run_id, row.on_front) for row in report.trials]
    front = {id(row.baseline) for row in report.front if row.baseline is not None}
    marks += [  # a model `harness evaluate` scored has a run of its own
        FrontMark(b.name, b.run_id, id(b) in front) for b in report.baselines if b.run_id
    ]
    weighed = {m.run_id for m in marks if m.run_id}
    stale = unweighed_evaluations(report.tracking_uri, report.parent_run_id, weighed)
    marks += [FrontMark(f"evaluation run {run_id}", run_id, False) for run_id in stale]
    return log_study_report(report.tracking_uri, report.parent_run_id, paths.values(), marks)


def summary_lines(report: Report) -> list[str]:
    """The terminal summary: the answer, then one line per step along the front."""
    return [
        *synthetic_lines(report),
        *answer_lines(report),
        "",
        "Steps along the Pareto front (cheapest first): each step's own gain, tested as a "
        "claim, then what the walk did (it buys by expected value, see the method):",
        *(step_line(step, report) for step in report.steps),
    ]

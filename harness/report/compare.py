"""`harness compare`: one report across studies on the same data.

Which model to fine-tune is the biggest cost lever, and each study answers only for its own base
model and backend. `build_comparison` pools every completed trial and checkpoint of several
studies (a MiniLM sweep, a bigger encoder, a LoRA-tuned LLM, an OpenAI model) with the baselines,
scored once, and hands them to the report's own analysis (`harness.report.build.analyse`): one
Pareto front of validation accuracy against cost, one walk whose selection correction and
families count every candidate of every study, one paired check on the test set. It needs the
same examples everywhere, so studies whose prepared data differ (another dataset, split, seed or
label set) are refused, naming the split that differs. `record_comparison` writes the report and
logs it as a run of its own in the MLflow experiment `harness-compare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.config import Experiment
from harness.errors import ConfigError
from harness.locations import path_component
from harness.records import PreparedData
from harness.report.build import analyse, study_rows, write_report
from harness.report.model import Origin, Report, ReportOptions, TrialRow
from harness.tracking.reports import COMPARE_EXPERIMENT, Answer, log_comparison
from harness.tracking.store import tracking_uri

COMPARED_TAG = "harness.compared_studies"  # comma-separated study names
KIND_TAG = "harness.kind"  # `compare`, so the runs of several comparisons can be filtered

__all__ = [
    "COMPARE_EXPERIMENT",
    "build_comparison",
    "comparison_dir",
    "record_comparison",
    "shared_data",
]


def build_comparison(experiments: Sequence[Experiment], options: ReportOptions) -> Report:
    """Gather the studies of `experiments` and analyse them as one.

    Args:
        experiments: Two or more experiments whose studies ran on the same prepared data.
        options: As for `harness report`.

    Returns:
        The report (unlogged: `record_comparison` writes and logs it). Its trial rows carry
        their `origin`; their `number`s are keys unique within the report.

    Raises:
        ConfigError: Fewer than two studies, a study named twice, a study missing or without a
            completed trial, or data that differ (the message names the split).
    """
    names = [e.study_name for e in experiments]
    if len(experiments) < 2:
        raise ConfigError("harness compare needs two or more experiments (or studies)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"study {twice[0]!r} is named twice: compare distinct studies")
    data = shared_data(experiments)
    rows: list[TrialRow] = []
    running = 0
    for experiment in experiments:
        found, still_running, _ = study_rows(experiment)
        backend = experiment.config.backend
        for row in found:
            row.origin = Origin(experiment.study_name, backend.kind, backend.model, row.number)
        rows += found
        running += still_running
    for key, row in enumerate(rows):
        row.number = key  # trial numbers repeat across studies; baselines keep -1, -2
    report = analyse(experiments[0], rows, options, experiments[1:])
    report.study = " vs ".join(names)
    report.backend = ", ".join(dict.fromkeys(e.config.backend.kind for e in experiments))
    report.running = running
    report.tracking_uri = tracking_uri(experiments[0])
    report.data_digest = data.digest
    report.notes.append(
        f"{len(experiments)} studies on the same data (digest {data.digest[:12]}); the baselines "
        f"are scored once, at {experiments[0].study_name}'s compute price."
    )
    return report


def shared_data(experiments: Sequence[Experiment]) -> PreparedData:
    """The prepared data every experiment gives (the first's).

    Raises:
        ConfigError: Two experiments give different data: the message names them, the splits
            (or the label sets) that differ and both digests.
    """
    from harness.data.prepare import prepare_experiment

    first = experiments[0]
    reference, _ = prepare_experiment(first)
    for other in experiments[1:]:
        data, _ = prepare_experiment(other)
        if data.digest != reference.digest:
            raise ConfigError(_differs(first, reference, other, data))
    return reference


def _differs(a: Experiment, da: PreparedData, b: Experiment, db: PreparedData) -> str:
    parts = [
        name for name in ("train", "validation", "test") if getattr(da, name) != getattr(db, name)
    ]
    if da.labels != db.labels:
        what = f"their label sets differ ({list(da.labels)} vs {list(db.labels)})"
    elif len(parts) == 1:
        what = f"the {parts[0]} split differs"
    else:
        what = f"the {', '.join(parts[:-1])} and {parts[-1]} splits differ"
    return (
        f"cannot compare {a.study_name} ({a.path}) and {b.study_name} ({b.path}): they are not "
        f"on the same data: {what} (data digest {da.digest[:12]} vs {db.digest[:12]}). "
        "Compare studies with the same `dataset` section and `seed`, so every model is chosen "
        "on the same validation examples and checked on the same test examples."
    )


def comparison_dir(report: Report) -> Path:
    """`mlruns/reports/compare-A-vs-B`, beside the studies' own reports (one folder)."""
    name = "compare-" + report.study.replace(" vs ", "-vs-")
    return Path("mlruns") / "reports" / path_component(name)


def record_comparison(
    report: Report, experiments: Sequence[Experiment], out_dir: Path
) -> tuple[dict[str, Path], list[str]]:
    """Write the report into `out_dir` and log it as a run of its own, named after the studies,
    in the MLflow experiment `harness-compare` of the first experiment's tracking store: the
    files under `report/`, the answer as metrics and tags. The studies' own runs are left as
    they are (their `pareto` tags are their own fronts').

    Returns:
        The files written, and what could not be logged, in words (empty when all was).
    """

    def write(run_id: str | None) -> dict[str, Path]:
        if run_id is not None:
            report.parent_run_id = run_id  # the report names the run it is logged on
        return write_report(report, out_dir)

    answer = _answer(report, experiments)
    return log_comparison(
        report.tracking_uri, f"compare {report.study}", _tags(report), write, answer
    )


def _tags(report: Report) -> dict[str, str]:
    from harness.tracking.record import DATA_DIGEST_TAG

    studies = dict.fromkeys(t.source for t in report.trials if t.source is not None)
    return {
        KIND_TAG: "compare",
        COMPARED_TAG: ",".join(s for s in studies if s),
        DATA_DIGEST_TAG: report.data_digest,
    }


def _answer(report: Report, experiments: Sequence[Experiment]) -> Answer:
    """What the comparison's run records of its answer: the chosen model (tags), its numbers
    (metrics) and the settings it was chosen under (params)."""
    rec = report.recommendation
    chosen = rec.chosen
    tags = {"harness.answer": chosen.name, "harness.answer_text": rec.text[:5000]}
    if chosen.origin is not None:
        for key, value in chosen.origin.columns().items():
            tags[f"harness.answer_{key}"] = value
    metrics = {
        "answer_valid_accuracy": chosen.selection_accuracy,
        "answer_test_accuracy": chosen.accuracy,
        "answer_cost_usd": chosen.cost,
        **({"answer_first_year_usd": chosen.weighed_cost} if report.options.weigh_running else {}),
        "candidates": float(report.candidates),  # trials, checkpoints and baselines
        "front_size": float(len(report.front)),
    }
    o = report.options
    params: dict[str, object] = {
        "experiments": ",".join(str(e.path) for e in experiments)[:6000],
        "monthly_requests": o.monthly_requests,
        "value_per_point": o.value_per_point,
        "budget": o.budget,
        "alpha": o.alpha,
        "risk": o.risk,
        "weigh_running": o.weigh_running,  # --monthly-requests given: the volume weighed
    }
    return Answer(tags=tags, metrics=metrics, params=params)

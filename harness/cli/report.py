"""The report: which setup is worth paying for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from harness.cli.common import (
    ExperimentArg,
    SetOption,
    app,
    console,
    err_console,
    out_folder,
    user_errors,
)

if TYPE_CHECKING:
    from harness.report.build import ReportOptions

RiskOption = Annotated[
    float,
    typer.Option(
        help="Buy on this quantile of the true gain instead of its expected value (0.5): "
        "0.1 pays only for a gain that is worth its price 9 times in 10."
    ),
]
MonthlyRequestsOption = Annotated[
    int | None,
    typer.Option(
        help="Inference requests a month (default 10,000, shown only): given, the front and "
        "the choice weigh the first year's cost of ownership, serving and hosting included."
    ),
]
ValuePerPointOption = Annotated[
    float | None, typer.Option(help="Dollars one accuracy point is worth to you.")
]
BudgetOption = Annotated[
    float | None,
    typer.Option(
        help="Most one configuration may cost, in dollars (its first year with --monthly-requests)."
    ),
]


def _options(
    monthly_requests: int | None, value_per_point: float | None, budget: float | None, risk: float
) -> ReportOptions:
    """The decision's options as `report` and `compare` take them."""
    from harness.report.build import ReportOptions

    return ReportOptions(
        monthly_requests=10_000 if monthly_requests is None else monthly_requests,
        weigh_running=monthly_requests is not None,
        value_per_point=value_per_point,
        budget=budget,
        risk=risk,
    )


def _print_outcome(lines: list[str], paths: dict[str, Path], logged: str | None) -> None:
    """The answer's lines, the files written and where MLflow holds them."""
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print()
    for name in ("markdown", "html"):
        console.print(f"{name:>8}  {paths[name]}", markup=False, highlight=False, soft_wrap=True)
    if logged:
        console.print(logged, markup=False, highlight=False)


@app.command()
@user_errors
def report(
    experiment: ExperimentArg,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the report files (default: mlruns/reports/STUDY, named after "
            "the study, so each study of one experiment file keeps its own report)."
        ),
    ] = None,
    monthly_requests: MonthlyRequestsOption = None,
    value_per_point: ValuePerPointOption = None,
    budget: BudgetOption = None,
    risk: RiskOption = 0.5,
    set_: SetOption = None,
) -> None:
    """Is paying more buying real accuracy? Pareto front, significance, baselines, advice."""
    from harness.cli.common import load_target
    from harness.report.build import (
        build_report,
        default_out_dir,
        log_report,
        summary_lines,
        write_report,
    )

    exp = load_target(experiment, set_)
    options = _options(monthly_requests, value_per_point, budget, risk)
    out = out_folder(out, "the report")
    result = build_report(exp, options)
    paths = write_report(result, out or default_out_dir(exp))
    problems = log_report(result, paths)
    logged = (
        f"Logged on MLflow run {result.parent_run_id}; the report's front (baselines "
        "included) tagged harness.report_front=true."
    )
    _print_outcome(
        summary_lines(result), paths, logged if result.parent_run_id and not problems else None
    )
    for problem in problems:
        err_console.print(f"warning: {problem}", markup=False, highlight=False)


@app.command()
@user_errors
def compare(
    experiments: Annotated[
        list[str],
        typer.Argument(
            metavar="EXPERIMENT...",
            help="Two or more experiment files, names in experiments/, or studies' names.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the report files (default: "
            "mlruns/reports/compare-A-vs-B, named after the studies)."
        ),
    ] = None,
    monthly_requests: MonthlyRequestsOption = None,
    value_per_point: ValuePerPointOption = None,
    budget: BudgetOption = None,
    risk: RiskOption = 0.5,
    set_: SetOption = None,
) -> None:
    """One report across studies on the same data: which model and backend is worth paying for?

    Every trial and checkpoint of every study, plus the baselines once, on one Pareto front of
    validation accuracy against cost, decided as `harness report` decides and checked once on
    the same test examples. `--set` applies to every experiment.
    """
    from harness.cli.common import load_target
    from harness.report.build import summary_lines
    from harness.report.compare import (
        COMPARE_EXPERIMENT,
        build_comparison,
        comparison_dir,
        record_comparison,
    )

    loaded = [load_target(name, set_) for name in experiments]
    options = _options(monthly_requests, value_per_point, budget, risk)
    out = out_folder(out, "the report")
    result = build_comparison(loaded, options)
    paths, problems = record_comparison(result, loaded, out or comparison_dir(result))
    logged = f"Logged as MLflow run {result.parent_run_id} in experiment {COMPARE_EXPERIMENT}."
    _print_outcome(
        summary_lines(result), paths, logged if result.parent_run_id and not problems else None
    )
    for problem in problems:
        err_console.print(f"warning: {problem}", markup=False, highlight=False)

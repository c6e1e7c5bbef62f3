"""The report: which setup is worth paying for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.common import ExperimentArg, SetOption, app, console, err_console, user_errors


@app.command()
@user_errors
def report(
    experiment: ExperimentArg,
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for the report files (default: mlruns/reports/EXPERIMENT)."),
    ] = None,
    monthly_requests: Annotated[
        int, typer.Option(help="Inference requests a month, for the cost of ownership.")
    ] = 10_000,
    value_per_point: Annotated[
        float | None, typer.Option(help="Dollars one accuracy point is worth to you.")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="Most one configuration may cost, in dollars.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Is paying more buying real accuracy? Pareto front, significance, baselines, advice."""
    from harness.config import load_experiment
    from harness.report.build import (
        ReportOptions,
        build_report,
        default_out_dir,
        log_report,
        summary_lines,
        write_report,
    )

    exp = load_experiment(experiment, set_)
    options = ReportOptions(
        monthly_requests=monthly_requests, value_per_point=value_per_point, budget=budget
    )
    result = build_report(exp, options)
    paths = write_report(result, out or default_out_dir(exp))
    problems = log_report(result, paths)
    for line in summary_lines(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print()
    for name in ("markdown", "html"):
        console.print(f"{name:>8}  {paths[name]}", markup=False, highlight=False, soft_wrap=True)
    if result.parent_run_id and not problems:
        console.print(f"Logged on MLflow run {result.parent_run_id}; front tagged pareto=true.")
    for problem in problems:
        err_console.print(f"warning: {problem}", markup=False, highlight=False)

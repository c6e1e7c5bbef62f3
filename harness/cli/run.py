"""Commands that prepare data, price and run the sweep, and list its trials."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from harness.cli.common import ExperimentArg, SetOption, app, console, err_console, user_errors
from harness.errors import TrainingRefused


@app.command()
@user_errors
def prepare(
    experiment: ExperimentArg,
    out: Annotated[Path | None, typer.Option(help="Directory for the JSONL files.")] = None,
    set_: SetOption = None,
) -> None:
    """Load, dedupe, split and write the dataset as JSONL (chat and prompt/completion)."""
    from harness.backends import load_backend
    from harness.config import load_experiment
    from harness.data.jsonl import write_prepared
    from harness.data.prepare import prepare_experiment

    exp = load_experiment(experiment, set_)
    backend = load_backend(exp.config.backend)
    data, report = prepare_experiment(exp, backend.count_tokens)
    target = out or Path("mlruns") / "prepared" / exp.name / data.digest[:12]
    paths = write_prepared(data, report, target, exp.config.dataset.system_prompt)
    from rich.markdown import Markdown

    console.print(Markdown(report.to_markdown()))
    console.print(f"\ndigest {data.digest}")
    for path in paths.values():
        console.print(f"  {path}", soft_wrap=True)


@app.command()
@user_errors
def sweep(
    experiment: ExperimentArg,
    add: Annotated[int, typer.Option(help="Run this many trials beyond study.n_trials.")] = 0,
    yes: Annotated[
        bool, typer.Option("--yes", help="Go on when the worst case exceeds the budget.")
    ] = False,
    set_: SetOption = None,
) -> None:
    """Run (or resume) the experiment's study and print the trials with the Pareto front.

    The budget is a hard cap: every trial reserves its worst-case cost before it starts. When the
    worst case of the whole sweep exceeds the budget, the sweep asks first (--yes: go on and
    stop when the budget is used up).
    """
    from harness.config import load_experiment
    from harness.console import RichView, trials_table
    from harness.sweep.loop import run_sweep

    def confirm(worst: Any, limit: float) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return typer.confirm(
            f"Worst case ${worst.usd:.4f} exceeds the budget ${limit:.4f}; trials stop when "
            "the budget is used up. Go on?"
        )

    exp = load_experiment(experiment, set_)
    with RichView(console) as view:
        outcome = run_sweep(exp, view, add_trials=add, confirm=confirm)
    if outcome.stopped and not outcome.refused:
        console.print(f"[yellow]{escape(outcome.stopped)}[/]")
    console.print(trials_table(outcome.handle.study, f"study {exp.study_name}  (* = Pareto front)"))
    console.print(f"MLflow parent run {outcome.parent_run_id}; browse with `harness ui`.")
    if outcome.refused:
        err_console.print(f"[bold red]error:[/] {escape(outcome.stopped or '')}", highlight=False)
        raise typer.Exit(TrainingRefused.exit_code)
    if outcome.all_failed:
        reason = outcome.failures[-1][1]
        err_console.print(
            f"[bold red]error:[/] every trial failed; the last: {escape(reason)}", highlight=False
        )
        raise typer.Exit(1)


@app.command()
@user_errors
def trials(experiment: ExperimentArg, set_: SetOption = None) -> None:
    """Print the study's trials as a table, Pareto-front members marked."""
    from harness.config import load_experiment
    from harness.console import trials_table
    from harness.sweep.study import load_existing_study

    exp = load_experiment(experiment, set_)
    study = load_existing_study(exp)
    console.print(trials_table(study, f"study {exp.study_name}  (* = Pareto front)"))


@app.command()
@user_errors
def estimate(experiment: ExperimentArg, set_: SetOption = None) -> None:
    """Price the sweep before spending anything: per trial and worst-case total."""
    from harness.config import load_experiment
    from harness.sweep.estimate import estimate_lines, estimate_sweep, estimate_table

    result = estimate_sweep(load_experiment(experiment, set_))
    console.print(estimate_table(result))
    for line in estimate_lines(result):
        console.print(line, markup=False, highlight=False)


@app.command()
@user_errors
def evaluate(
    experiment: ExperimentArg,
    model: Annotated[
        str, typer.Option(help="Model to score: the base model (zero-shot) or a fine-tuned id.")
    ],
    set_: SetOption = None,
) -> None:
    """Score a model on the experiment's test set without training; logs an MLflow run."""
    from harness.config import load_experiment
    from harness.sweep.evaluation import evaluate_model

    result = evaluate_model(load_experiment(experiment, set_), model)
    label = " (synthetic: test server)" if result.synthetic else ""
    m = result.metrics
    lines = [
        f"{result.model} on {m.n_examples} test examples{label}:",
        f"  accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  weighted-F1 {m.weighted_f1:.4f}"
        + (f"  MAE {m.mae:.3f}" if m.mae is not None else ""),
        f"  answers outside the label set: {result.metrics.out_of_set} (counted as wrong)",
        f"  cost ${result.cost.usd:.6f} ({result.cost.inference_tokens:,} tokens){label}",
        f"MLflow run {result.run_id}",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False)


study_app = typer.Typer(help="Share one study among workers on several machines.")
app.add_typer(study_app, name="study")


@study_app.command("create")
@user_errors
def study_create(experiment: ExperimentArg, set_: SetOption = None) -> None:
    """Create the experiment's study and its MLflow study run once, before workers join.

    Then run `harness sweep EXPERIMENT` on every machine, with the same `study.storage` and
    `MLFLOW_TRACKING_URI`. Running it again finds both.
    """
    from harness.config import load_experiment
    from harness.sweep.shared import create_shared_study
    from harness.tracking.store import tracking_uri
    from harness.urls import redact_text

    exp = load_experiment(experiment, set_)
    done = create_shared_study(exp)
    state = "created" if done.created_run else "found"
    lines = [
        f"study {done.study_name} in {redact_text(exp.config.study.storage)}: "
        f"{done.trials} trial(s) held",
        f"MLflow study run {done.parent_run_id} ({state}) in {redact_text(tracking_uri(exp))}",
        f"Start workers with: harness sweep {experiment}",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

"""Commands that prepare data, price and run the sweep, and list its trials."""

from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from harness.cli.common import (
    ExperimentArg,
    HarnessGroup,
    SetOption,
    app,
    console,
    err_console,
    load_target,
    one_format,
    out_folder,
    stop_signals_as_interrupt,
    user_errors,
)
from harness.errors import ConfigError, TrainingRefused
from harness.locations import redact_text

if TYPE_CHECKING:
    from harness.config import Experiment

# After the title of a study whose trials ran on a test server on this machine.
SYNTHETIC_TITLE = "  (synthetic: test server)"


@app.command()
@user_errors
def prepare(
    experiment: ExperimentArg,
    out: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Directory for the JSONL files.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Load, dedupe, split and write the dataset as JSONL (chat and prompt/completion)."""
    from harness.backends import load_backend
    from harness.data.jsonl import write_prepared
    from harness.data.prepare import prepare_experiment

    exp = load_target(experiment, set_)
    out = out_folder(out, "the prepared data")
    backend = load_backend(exp.config.backend)
    data, report = prepare_experiment(exp)
    report = report.with_tokens(data, backend.count_tokens, backend.text_token_limit(data.labels))
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
    add: Annotated[
        int, typer.Option(min=0, help="Run this many trials beyond study.n_trials.")
    ] = 0,
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
    from harness.cli.console import RichView, trials_table
    from harness.records import usd
    from harness.sweep.loop import run_sweep

    def confirm(worst: Any, limit: float) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return typer.confirm(
            f"Worst case {usd(worst.usd)} exceeds the budget {usd(limit)}; trials stop when "
            "the budget is used up. Go on?"
        )

    exp = load_target(experiment, set_)
    with stop_signals_as_interrupt(), RichView(console) as view:
        outcome = run_sweep(exp, view, add_trials=add, confirm=confirm)
    if outcome.stopped and not outcome.refused:
        console.print(f"[yellow]{escape(outcome.stopped)}[/]")
    title = _table_title(exp.study_name, outcome.handle.study)
    console.print(trials_table(outcome.handle.study, title, _fixed_params(exp)))
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


def _table_title(name: str, study: Any) -> str:
    """The trials table's title; a test server's figures are labelled synthetic."""
    from harness.tracking.journal import ran_on_a_test_server

    synthetic = ran_on_a_test_server(study.get_trials(deepcopy=False))
    # One objective (accuracy, cost at most a limit): a best trial, no front of two.
    star = "Pareto front" if len(study.directions) > 1 else "best validation accuracy"
    return f"study {name}  (* = {star})" + (SYNTHETIC_TITLE if synthetic else "")


@app.command()
@user_errors
def trials(
    experiment: ExperimentArg,
    set_: SetOption = None,
    json_: Annotated[
        bool, typer.Option("--json", help="One JSON list of trial records (params, metrics, $).")
    ] = False,
    csv_: Annotated[
        bool, typer.Option("--csv", help="CSV: a header, then one row per trial or checkpoint.")
    ] = False,
) -> None:
    """Print the study's trials as a table, Pareto-front members starred.

    `--json` and `--csv` write every trial (checkpoints included) by number, for scripts: the
    same fields whatever the study holds, empty (null) where a trial has no value.
    """
    from harness.cli.console import trials_table
    from harness.sweep.study import load_existing_study

    chosen = one_format(json=json_, csv=csv_)
    exp = load_target(experiment, set_)
    study = load_existing_study(exp)
    if chosen is None:
        title = _table_title(exp.study_name, study)
        console.print(trials_table(study, title, _fixed_params(exp)))
        return
    from harness.cli.trial_rows import trial_records, write_csv

    records = trial_records(study, _fixed_params(exp), _local_files(exp))
    if chosen == "json":
        print(json.dumps(records, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        write_csv(records)


def _local_files(exp: Experiment) -> bool:
    """Whether the experiment's backend keeps its models in folders here (the local ones)."""
    return exp.config.backend.kind in ("local", "local_lm")


def _fixed_params(exp: Experiment) -> dict[str, Any]:
    """The search space's fixed values (a trial records only what it sampled); none when the
    search-space file is gone or broken, since the trials are still worth listing."""
    from harness.sweep.search_space import experiment_space

    try:
        return experiment_space(exp).fixed
    except ConfigError:
        return {}


@app.command()
@user_errors
def estimate(experiment: ExperimentArg, set_: SetOption = None) -> None:
    """Price the sweep before spending anything: per trial and worst-case total."""
    from harness.sweep.estimate import estimate_lines, estimate_sweep, estimate_table

    result = estimate_sweep(load_target(experiment, set_))
    for warning in result.warnings:
        err_console.print(warning, markup=False, highlight=False, soft_wrap=True)
    console.print(estimate_table(result))
    for line in estimate_lines(result):
        console.print(line, markup=False, highlight=False)


@app.command()
@user_errors
def evaluate(
    experiment: ExperimentArg,
    model: Annotated[
        str,
        typer.Option(
            metavar="ID", help="Model to score: the base model (zero-shot) or a fine-tuned id."
        ),
    ],
    set_: SetOption = None,
) -> None:
    """Score a model on the experiment's validation and test sets without training; logs an
    MLflow run, and `harness report` then weighs the model as a baseline."""
    from harness.sweep.evaluation import evaluate_model

    exp = load_target(experiment, set_)
    say = functools.partial(console.print, markup=False, highlight=False, soft_wrap=True)
    with stop_signals_as_interrupt():  # as Ctrl-C: a deployment made to score is deleted
        result = evaluate_model(exp, model, announce=say)
    label = " (synthetic: test server)" if result.synthetic else ""
    m = result.metrics
    # Said only where some are: a model choosing among the labels by score has none by design.
    outside = f"  answers outside the label set: {m.out_of_set} (counted as wrong)"
    cost = result.cost
    hosting = f"; ${cost.hosting_usd:.6f} of it hosting, {cost.hosting_hours:g} h"
    hosting = hosting if cost.hosting_hours else ""
    lines = [
        f"{result.model} on {m.n_examples} test examples{label}:",
        f"  accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  weighted-F1 {m.weighted_f1:.4f}"
        + (f"  MAE {m.mae:.3f}" if m.mae is not None else ""),
        *([outside] if m.out_of_set else []),
        *(
            [
                f"  validation accuracy {result.valid_accuracy:.4f} on "
                f"{len(result.valid_correct)} examples (what `harness report` compares it on, "
                "as a baseline)"
            ]
            if result.valid_accuracy is not None
            else []
        ),
        f"  cost ${cost.usd:.6f} ({cost.inference_tokens:,} tokens{hosting}){label}",
        *([] if result.unrecorded else [f"MLflow run {result.run_id}"]),
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False)
    if result.unrecorded:  # a URL's password blanked, as every outage line has it
        why = redact_text(f"{result.unrecorded}: these scores were not recorded (no MLflow run)")
        err_console.print(f"[bold red]error:[/] {escape(why)}", highlight=False)
        raise typer.Exit(1)


study_app = typer.Typer(cls=HarnessGroup, help="Share one study among workers on several machines.")
app.add_typer(study_app, name="study")


@study_app.command("create")
@user_errors
def study_create(experiment: ExperimentArg, set_: SetOption = None) -> None:
    """Create the experiment's study and its MLflow study run once, before workers join.

    Then run `harness sweep EXPERIMENT` on every machine, with the same `study.storage` and
    `MLFLOW_TRACKING_URI`. Running it again finds both.
    """
    from harness.locations import redact_text, without_url_passwords
    from harness.sweep.shared import create_shared_study
    from harness.tracking.store import tracking_uri

    exp = load_target(experiment, set_)
    done = create_shared_study(exp)
    state = "created" if done.created_run else "found"
    command = shlex.join(["harness", "sweep", experiment, *(f"--set={o}" for o in set_ or [])])
    shown = redact_text(without_url_passwords(command))  # workers read PGPASSWORD instead
    lines = [
        f"study {done.study_name} in {redact_text(exp.config.study.storage)}: "
        f"{done.trials} trial(s) held",
        f"MLflow study run {done.parent_run_id} ({state}) in {redact_text(tracking_uri(exp))}",
        f"Start workers with: {shown}",
    ]
    if shown != command:
        lines.append("  (the password is left out: give workers PGPASSWORD or ~/.pgpass)")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

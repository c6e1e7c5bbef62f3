"""The `harness` command: thin commands over the library.

Every `HarnessError` becomes one line on stderr and a non-zero exit; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from harness.errors import HarnessError, TrainingRefused

app = typer.Typer(
    help="Decide which fine-tuning setup to pay for: sweep, track, compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column squeeze, and error
# lines are never hard-wrapped, so a path in a message stays greppable.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

ExperimentArg = Annotated[str, typer.Argument(help="Experiment file, or its name in experiments/.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config value, e.g. --set study.n_trials=4 (repeatable)."
    ),
]


def _user_errors(func: F) -> F:
    """Turn HarnessError into one clear message and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HarnessError as exc:
            # Escaped: messages quote config values such as `[accuracy, cost]`, not markup.
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: run the same command again to resume the study")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@_user_errors
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
@_user_errors
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
@_user_errors
def trials(experiment: ExperimentArg, set_: SetOption = None) -> None:
    """Print the study's trials as a table, Pareto-front members marked."""
    from harness.config import load_experiment
    from harness.console import trials_table
    from harness.sweep.study import load_existing_study

    exp = load_experiment(experiment, set_)
    study = load_existing_study(exp)
    console.print(trials_table(study, f"study {exp.study_name}  (* = Pareto front)"))


@app.command()
@_user_errors
def estimate(experiment: ExperimentArg, set_: SetOption = None) -> None:
    """Price the sweep before spending anything: per trial and worst-case total."""
    from harness.config import load_experiment
    from harness.sweep.estimate import estimate_lines, estimate_sweep, estimate_table

    result = estimate_sweep(load_experiment(experiment, set_))
    console.print(estimate_table(result))
    for line in estimate_lines(result):
        console.print(line, markup=False, highlight=False)


@app.command()
@_user_errors
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


@app.command()
@_user_errors
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    experiment: Annotated[
        str | None, typer.Option(help="Use this experiment's tracking URI.")
    ] = None,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the project's tracking store (a tracking server,
    `http(s)://`, serves its own UI: its address is printed instead)."""
    from harness.config import load_experiment
    from harness.tracking.store import chart_view_links, is_remote, tracking_uri
    from harness.urls import redact_text

    uri = tracking_uri(load_experiment(experiment) if experiment else None)
    if is_remote(uri):
        _remote_ui(uri)
        return
    base = f"http://127.0.0.1:{port}"
    console.print(f"MLflow UI for {redact_text(uri)} at {base}  (Ctrl-C to stop)", soft_wrap=True)
    for name, link in chart_view_links(uri, base).items():
        console.print(f"  {name}: every trial charted by test accuracy: {link}", soft_wrap=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # One worker and no GenAI job runner: the UI answers in seconds instead of ~30 s on 2 cores.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    sys.stdout.flush()
    # Become the server, so Ctrl-C and SIGTERM reach it directly and nothing is left orphaned.
    os.execve(sys.executable, command, env)


def _remote_ui(uri: str) -> None:
    """Print a tracking server's UI address and chart links; nothing is started here."""
    from harness.tracking.store import chart_view_links
    from harness.urls import redact_text

    base = uri.rstrip("/")
    console.print(f"MLflow UI: {redact_text(base)}  (the tracking server's own)", soft_wrap=True)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # say so now if it is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        links = chart_view_links(uri, base)
    except Exception as exc:  # the server is down or refuses us: the address is still the answer
        err_console.print(f"warning: {redact_text(str(exc))[:300]}", markup=False, highlight=False)
        return
    for name, link in links.items():
        line = f"  {name}: every trial charted by test accuracy: {redact_text(link)}"
        console.print(line, soft_wrap=True, markup=False, highlight=False)


study_app = typer.Typer(help="Share one study among workers on several machines.")
app.add_typer(study_app, name="study")


@study_app.command("create")
@_user_errors
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


@app.command()
@_user_errors
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


@app.command()
@_user_errors
def promote(
    experiment: ExperimentArg,
    trial: Annotated[
        int | None,
        typer.Option(help="Trial number to promote (default: the report's recommendation)."),
    ] = None,
    alias: Annotated[str, typer.Option(help="Registry alias to point at the model.")] = "champion",
    set_: SetOption = None,
) -> None:
    """Register a trial's model in the MLflow model registry under an alias."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from harness.config import load_experiment
    from harness.handoff.promote import promote as promote_trial

    done = promote_trial(load_experiment(experiment, set_), trial_number=trial, alias=alias)
    console.print(f"Chose {done.reason}", markup=False, highlight=False, soft_wrap=True)
    action = "was already registered as" if done.reused else "registered as"
    lines = [
        f"Trial {done.trial_number} ({done.backend}, test accuracy {done.test_accuracy:.4f}, "
        f"cost ${done.cost_usd:.6f}) {action} {done.name} version {done.version}; "
        f"alias {done.alias!r} points at it.",
        f"Model URI: {done.uri}  (logged on MLflow run {done.run_id})",
        f'Try it:    harness predict {done.uri} "a sentence of your own"',
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
@_user_errors
def predict(
    model_uri: Annotated[
        str,
        typer.Argument(
            help="models:/NAME@ALIAS, models:/NAME/VERSION, or a registered name (its champion)."
        ),
    ],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="Texts from a file: one per line, or a CSV / JSONL with a text column."),
    ] = None,
    column: Annotated[str, typer.Option(help="The text column of a CSV / JSONL file.")] = "text",
    json_: Annotated[
        bool, typer.Option("--json", help="One JSON object per text, with every label's score.")
    ] = False,
) -> None:
    """Classify texts with a registered model, in the prompt format it was trained with."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from harness.errors import ConfigError
    from harness.handoff.pyfunc import read_texts
    from harness.handoff.serve import load_registered_model

    inputs = list(texts or []) + (read_texts(file, column) if file else [])
    if not inputs:
        raise ConfigError("nothing to classify: give texts as arguments or --file PATH")
    frame = load_registered_model(model_uri).predict(inputs)
    _print_predictions(inputs, frame, json_)


def _print_predictions(texts: list[str], frame: Any, as_json: bool) -> None:
    import json

    from rich.table import Table

    scores = [c for c in frame.columns if c.startswith("score_")]
    if as_json:
        for text, row in zip(texts, frame.to_dict(orient="records"), strict=True):
            record = {"text": text, "label": row["label"], "confidence": row["confidence"]}
            record["scores"] = {c.removeprefix("score_"): row[c] for c in scores}
            print(json.dumps(record, ensure_ascii=False))
        return
    table = Table("text", "label", "confidence")
    for text, label, confidence in zip(texts, frame["label"], frame["confidence"], strict=True):
        table.add_row(text, str(label), f"{confidence:.3f}")
    console.print(table)


def main() -> None:
    """Entry point of the `harness` script and `python -m harness`."""
    app()

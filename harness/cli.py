"""The `harness` command: thin commands over the library.

Every `HarnessError` becomes one line on stderr and a non-zero exit; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from harness.errors import HarnessError

app = typer.Typer(
    help="Decide which fine-tuning setup to pay for: sweep, track, compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ExperimentArg = Annotated[str, typer.Argument(help="Experiment file, or its name in experiments/.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set study.n_trials=4 (repeatable)."),
]


def _user_errors(func: F) -> F:
    """Turn HarnessError into one clear message and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HarnessError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
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
    from harness.data import write_prepared
    from harness.sweep import prepare_experiment

    exp = load_experiment(experiment, set_)
    backend = load_backend(exp.config.backend)
    data, report = prepare_experiment(exp, backend)
    target = out or Path("mlruns") / "prepared" / exp.name / data.digest[:12]
    paths = write_prepared(data, report, target, exp.config.dataset.system_prompt)
    console.print(report.to_markdown())
    console.print(f"\ndigest {data.digest}")
    for name, path in paths.items():
        console.print(f"{name:>28}  {path}")


@app.command()
@_user_errors
def sweep(
    experiment: ExperimentArg,
    add: Annotated[int, typer.Option(help="Run this many trials beyond study.n_trials.")] = 0,
    set_: SetOption = None,
) -> None:
    """Run (or resume) the experiment's study and print the trials with the Pareto front."""
    from harness.config import load_experiment
    from harness.console import RichView, trials_table
    from harness.sweep import run_sweep

    exp = load_experiment(experiment, set_)
    with RichView(console) as view:
        outcome = run_sweep(exp, view, add_trials=add)
    if outcome.stopped:
        console.print(f"[yellow]{outcome.stopped}[/]")
    console.print(trials_table(outcome.handle.study, f"study {exp.study_name}  (* = Pareto front)"))
    console.print(f"MLflow parent run {outcome.parent_run_id}; browse with `harness ui`.")


@app.command()
@_user_errors
def trials(experiment: ExperimentArg, set_: SetOption = None) -> None:
    """Print the study's trials as a table, Pareto-front members marked."""
    from harness.config import load_experiment
    from harness.console import trials_table
    from harness.study import load_existing_study

    exp = load_experiment(experiment, set_)
    study = load_existing_study(exp)
    console.print(trials_table(study, f"study {exp.study_name}  (* = Pareto front)"))


@app.command()
@_user_errors
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    experiment: Annotated[str | None, typer.Option(help="Use this experiment's tracking URI.")] = None,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the project's tracking store."""
    from harness.config import load_experiment
    from harness.tracking import tracking_uri

    uri = tracking_uri(load_experiment(experiment) if experiment else None)
    console.print(f"MLflow UI for {uri} at http://127.0.0.1:{port}  (Ctrl-C to stop)")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    try:
        raise typer.Exit(subprocess.call(command))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def main() -> None:
    """Entry point of the `harness` script and `python -m harness`."""
    app()

"""What every command shares: the typer app, the consoles, common arguments, error handling.

Every `HarnessError` becomes one line on stderr and a non-zero exit; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from harness.errors import HarnessError

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


def user_errors(func: F) -> F:
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

"""Run the `harness` command in-process, as its console script runs it, for tests.

The console script is `harness.cli:main`, which only calls `app()`; every command turns a
`HarnessError` into one line on stderr and a `typer.Exit`. So invoking `app` through typer's
`CliRunner` (standalone mode, like `app()`) gives the same exit codes, stdout and stderr as a
fresh process, without paying for a new interpreter and its imports on every call.

A bug in a command (any other exception) is re-raised in the test with its traceback and the
captured output attached, where the real script would print a traceback and exit 1.

Tests whose point is the process itself (the entry points, imports in a fresh interpreter,
signals) still start one with `subprocess`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path

from typer.testing import CliRunner, Result

# `harness.cli` sizes and colours its consoles when it is imported, from whether stdout is a
# terminal. Imported first here, with output redirected, the commands print as a piped `harness`
# does (160 columns, no colour) even under `pytest -s` in a terminal.
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    from harness.cli import app

__all__ = ["Result", "assert_clean_error", "run_cli"]


def run_cli(
    *args: str,
    cwd: Path | str | None = None,
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
) -> Result:
    """`harness ARGS...` in this process; stdout and stderr are captured apart.

    `cwd` is the working directory for this one call (restored afterwards); `env` sets (or, with
    None, unsets) environment variables for this one call. stdin is `input`, never a terminal.
    """
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(app, list(args), input=input, env=env, prog_name="harness")
    error = result.exception
    if error is not None and not isinstance(error, SystemExit):
        error.add_note(
            f"harness {' '.join(args)}: an unexpected exception, not a clean error\n"
            f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
        )
        raise error
    return result


def assert_clean_error(result: Result, *needles: str) -> None:
    """One clear message: a non-zero exit, no traceback, each needle on stderr."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr

"""What every command shares: the typer app, the consoles, common arguments, error handling.

Every `HarnessError` becomes one line on stderr and a non-zero exit; anything else is a bug and
keeps its traceback.

EXPERIMENT (`load_target`) names a file or a study. A study records the experiment it was created
from (`harness.tracking.record.experiment_attrs`: the resolved YAML, its file, the `--set`
overrides), so `harness trials x` opens a study made with `--set study.name=x` without its file
and its overrides. The order: an existing file, `experiments/NAME(.yaml)`, then a study named NAME
in the default storage (`mlruns/optuna.db`); a name that is both a file in `experiments/` and a
study made from another file uses the file and says so.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from harness import __version__
from harness.config import (
    DEFAULT_STORAGE,
    EXPERIMENTS_DIR,
    Experiment,
    ExperimentConfig,
    apply_overrides,
    find_experiment_file,
    format_validation_error,
    inline_search_space,
    load_experiment,
    tracking_uri_problem,
)
from harness.errors import ConfigError, HarnessError, Terminated
from harness.locations import redact_text, storage_problem, with_driver
from harness.tracking.store import server_unreachable

if TYPE_CHECKING:
    from harness.tracking.record import StudyOrigin

# Option values named by what they hold, never by a Python type (`<int>`, `<list[str]>`).
_METAVARS = {"<int>": "N", "<float>": "NUMBER", "<path>": "PATH", "<list[str]>": "TEXT"}


class _Argument(TyperArgument):
    """An argument shown as click shows it: `EXPERIMENT` in the usage line, no type beside it."""

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.display_name_raw
        many = self.nargs != 1 and not name.endswith("...")  # a metavar may say it already
        return [(name if self.required else f"[{name}]") + ("..." if many else "")]

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _tidy(param: Any) -> None:
    """Give a parameter a metavar a user reads: none for a flag, `N`, `PATH`, `TEXT`..."""
    if isinstance(param, TyperArgument) and not isinstance(param, _Argument):
        param.__class__ = _Argument  # adds two display methods, no state
        param.metavar = param.metavar or str(param.name).upper()
    elif isinstance(param, TyperOption) and param.metavar is None:
        if param.is_flag or param.count:
            param.metavar = ""
        else:
            shown = param.display_type(None)  # type: ignore[arg-type]  # unused for plain types
            param.metavar = _METAVARS.get(shown, shown.strip("<>").upper())


class _TidyHelp:
    """Clean metavars in help (`--set KEY=VALUE`, `--yes`, `EXPERIMENT`), the help option's too."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _tidy(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        _tidy(option)
        return option


class HarnessCommand(_TidyHelp, TyperCommand):
    """A command whose help shows clean metavars."""


class HarnessGroup(_TidyHelp, TyperGroup):
    """A command group with the same clean help as `HarnessCommand`."""


app = typer.Typer(
    cls=HarnessGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Markdown re-flows docstring paragraphs to the terminal; `-h` everywhere (click inherits it).
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _console_width() -> int | None:
    """The terminal's width; piped, `COLUMNS` when set, else 160 (CI logs, files)."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 160


# Piped output gets a wide table instead of rich's 80-column squeeze, and error lines are never
# hard-wrapped, so a path in a message stays greppable.
console = Console(width=_console_width())
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])
PG_CONNECT_TIMEOUT_S = "10"  # seconds to reach a study's PostgreSQL server and log in


def _print_version(value: bool) -> None:
    if value:
        print(f"harness {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Decide which fine-tuning setup to pay for: sweep, track, compare.

    EXPERIMENT is an experiment file, its name in experiments/, or the name of a study in
    mlruns/optuna.db (one made with `--set study.name=NAME` included).
    """
    # A PostgreSQL server that accepts and never answers held a command silent for minutes
    # (psycopg's 130 s per connection); libpq's own variable, so a user's value wins.
    os.environ.setdefault("PGCONNECT_TIMEOUT", PG_CONNECT_TIMEOUT_S)


ExperimentArg = Annotated[
    str,
    typer.Argument(
        metavar="EXPERIMENT",
        help="Experiment file, its name in experiments/, or a study's name.",
        show_default=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set study.n_trials=4 (repeatable).",
    ),
]


def load_target(name: str, overrides: list[str] | None = None) -> Experiment:
    """The experiment EXPERIMENT names: a file, `experiments/NAME`, or a study's name.

    Raises:
        ConfigError: Nothing of that name (the message lists the experiments and studies known,
            with the closest), an invalid config, or a study too old to hold its experiment.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    problem = tracking_uri_problem(uri)
    if problem:  # before a command creates a study it could not track
        raise ConfigError(f"MLFLOW_TRACKING_URI={uri}: {problem}")
    if Path(name).expanduser().is_file():
        return _as_recorded(load_experiment(name, overrides), overrides)
    study_set = _study_set(overrides)  # what --set says of the study, parsed as the file would be
    storage = str(study_set.get("storage") or DEFAULT_STORAGE)  # a study is looked for there
    study_names = _study_names(storage)
    try:
        path = find_experiment_file(name)
    except ConfigError:  # no such file: a study's name, or nothing known
        if name not in study_names:
            if not sqlite_missing(storage):
                open_storage(storage)  # one that cannot be read says why, not "no such study"
            raise ConfigError(_unknown(name, study_names, storage)) from None
        return _from_study(name, storage, overrides)
    experiment = _as_recorded(load_experiment(str(path), overrides), overrides)
    # `--set study.name=...` names the study: the file is plainly what was meant.
    if name in study_names and experiment.study_name != name and "name" not in study_set:
        err_console.print(
            f"note: {name!r} is both {path} (study {experiment.study_name!r}) and a study in "
            f"{redact_text(storage)} ({_made_from(name, storage)}); using the file. To open the "
            "study, run the "
            "command with that file and those --set options.",
            markup=False,
            highlight=False,
        )
    return experiment


def _as_recorded(experiment: Experiment, overrides: list[str] | None) -> Experiment:
    """The file's experiment, or its study's as recorded where they differ (`_recorded`)."""
    from harness.cli._recorded import as_recorded

    def note(text: str) -> None:
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)

    return as_recorded(experiment, overrides, _recorded_study, note)


def _recorded_study(
    name: str, url: str, overrides: list[str] | None
) -> tuple[StudyOrigin, Experiment] | None:
    """A study's origin and recorded experiment (with `overrides`); None: no such study yet, or
    one that recorded nothing."""
    import optuna

    from harness.tracking.record import StudyOrigin

    if sqlite_missing(url) or name not in _study_names(url):
        return None
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    origin = StudyOrigin.from_attrs(study.user_attrs)
    return None if origin.yaml is None else (origin, _from_study(name, url, overrides))


def _study_set(overrides: list[str] | None) -> dict[str, Any]:
    """The `study` section the `--set` options give, alone (empty when they give none)."""
    study = apply_overrides({}, list(overrides or [])).get("study")
    return study if isinstance(study, dict) else {}


def _made_from(name: str, storage: str) -> str:
    """`made from FILE --set ...` for a study in `storage`, as far as it says."""
    import optuna

    from harness.tracking.record import StudyOrigin

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    origin = StudyOrigin.from_attrs(study.user_attrs)
    if origin.path is None:
        return "made before studies recorded their experiment"
    return " ".join(["made from", origin.path, *(f"--set {o}" for o in origin.overrides)])


def sqlite_missing(url: str) -> bool:
    """Whether `url` is a SQLite file that does not exist (opening it would create it)."""
    path = url.removeprefix("sqlite:///")
    return url.startswith("sqlite:///") and path != ":memory:" and not Path(path).exists()


def _study_names(url: str) -> list[str]:
    """The studies in a storage; none where the SQLite file does not exist or cannot be read."""
    if sqlite_missing(url):
        return []
    try:
        return [s.study_name for s in open_storage(url).get_all_studies()]
    except ConfigError:
        return []


def open_storage(url: str) -> Any:
    """The RDB storage at `url`, read-only in spirit (nothing is created but Optuna's tables)."""
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(with_driver(url))
        storage.get_all_studies()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, ValueError) as exc:
        reason = storage_problem(exc)
        raise ConfigError(f"cannot open study storage {redact_text(url)!r}: {reason}") from None
    return storage


def _from_study(name: str, url: str, overrides: list[str] | None) -> Experiment:
    """Rebuild the experiment a study was created from, with `overrides` applied on top."""
    import optuna

    from harness.tracking.record import StudyOrigin

    study = optuna.load_study(study_name=name, storage=open_storage(url))
    origin = StudyOrigin.from_attrs(study.user_attrs)
    if origin.yaml is None:
        raise ConfigError(
            f"study {name!r} in {redact_text(url)} was created before studies recorded their "
            "experiment: open it with its experiment file (and the --set options it was made "
            f"with), e.g. harness trials FILE --set study.name={name}"
        )
    raw = yaml.safe_load(origin.yaml)
    # Where it was found, not the stored text (whose password, if any, is blanked).
    raw.setdefault("study", {})["storage"] = url
    made_from = Path(origin.path or f"{name}.yaml")
    raw = apply_overrides(inline_search_space(raw, made_from, overrides or []), overrides or [])
    source = f"study {name!r} (made from {origin.path})" + (" with --set" if overrides else "")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
    path = Path(origin.path or f"{name}.yaml")
    return Experiment(config, path, raw, overrides=(*origin.overrides, *(overrides or ())))


def _unknown(name: str, study_names: list[str], storage: str) -> str:
    """`NAME: no experiment file or study of that name` with what is known and the closest."""
    files = sorted(p.stem for p in Path(EXPERIMENTS_DIR).glob("*.yaml"))
    close = difflib.get_close_matches(name, [*files, *study_names], n=1, cutoff=0.6)
    where = redact_text(storage)
    parts = [f"{name}: no such experiment file, and no study of that name in {where}."]
    if close:
        parts.append(f"Did you mean {close[0]!r}?")
    parts.append(f"Known experiments: {', '.join(files) or 'none'}.")
    parts.append(f"Studies: {', '.join(sorted(study_names)) or 'none'}.")
    return " ".join(parts)


def one_format(**chosen: bool) -> str | None:
    """The one output format chosen among flags such as `--json` / `--csv` (None: the table).

    Raises:
        ConfigError: More than one was given.
    """
    picked = [name for name, on in chosen.items() if on]
    if len(picked) > 1:
        flags = " and ".join(f"--{name}" for name in picked)
        raise ConfigError(f"{flags}: choose one output format")
    return picked[0] if picked else None


def examples(*lines: str) -> str:
    """A command's `Examples:` epilog; each line a command, with an optional `# comment`."""
    return "Examples:\n\n```\n" + "\n".join(lines) + "\n```"


def out_folder(path: Path | None, what: str) -> Path | None:
    """Make the folder `--out` names before any work is done, or say in one line why it cannot
    be (a file in the way, no such place, no permission); None stays None."""
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"--out {path}: cannot write {what} there ({reason})") from None
    return path


_RESUMES_A_STUDY = frozenset({"sweep"})  # commands whose interruption leaves a study to resume


def user_errors(func: F) -> F:
    """Turn HarnessError into one clear message and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HarnessError as exc:
            # Escaped: messages quote config values such as `[accuracy, cost]`, not markup.
            message = escape(redact_text(str(exc)))  # a provider may echo a key in its error
            err_console.print(f"[bold red]error:[/] {message}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            why = f" ({exc})" if isinstance(exc, Terminated) else ""
            if func.__name__ in _RESUMES_A_STUDY:  # only a sweep has a study to resume
                why += ": run the same command again to resume the study"
            notes = [f"; {n}" for n in getattr(exc, "__notes__", ())]  # what scoring had paid
            err_console.print(f"interrupted{why}{escape(redact_text(''.join(notes)))}")
            raise typer.Exit(exc.exit_code if isinstance(exc, Terminated) else 130) from None
        except Exception as exc:
            unreachable = server_unreachable(exc)  # MLflow's retries ran out: said, not a trace
            if unreachable is None:
                raise
            if func.__name__ in _RESUMES_A_STUDY:
                unreachable += (
                    "; the study keeps what it recorded (a trial cut short is failed, its cost "
                    "counted, and queued again): run the same command once the server answers"
                )
            err_console.print(f"[bold red]error:[/] {escape(redact_text(unreachable))}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """While inside: SIGTERM and SIGHUP raise `Terminated` (a KeyboardInterrupt) where Ctrl-C
    would raise, once; a second signal during the clean-up that follows is ignored."""
    received: list[int] = []

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise Terminated(signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread (a test runner's worker, say)
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

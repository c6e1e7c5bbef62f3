"""One error hierarchy. The CLI turns every `HarnessError` into one clear line and a non-zero exit.

Anything a user can fix (a typo in a config, a missing column, a malformed JSONL line) raises a
subclass of `HarnessError` whose message names the file, field or line. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import signal


class HarnessError(Exception):
    """Base class for errors a user can act on. `exit_code` is what the CLI returns."""

    exit_code = 1


class ConfigError(HarnessError):
    """An experiment file, search space or command-line override is invalid."""

    exit_code = 2


class DataError(HarnessError):
    """A dataset cannot be loaded or is unfit for training (missing column, one class, ...)."""

    exit_code = 2


class BackendError(HarnessError):
    """A backend could not train or predict (model missing, API refused, job failed)."""


class TrainingRefused(BackendError):
    """The provider takes no new fine-tuning jobs (OpenAI: HTTP 403 training_not_available).

    The sweep stops on it instead of failing every remaining trial the same way.
    """

    exit_code = 3


class BudgetExceeded(HarnessError):
    """Running the next trial could spend more than the sweep's budget allows."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt, so a sweep that is
    `kill`ed, timed out or loses its terminal stops exactly as Ctrl-C stops it (the running
    trial settled, its MLflow run closed); the CLI then exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

"""Ctrl-C, SIGTERM and SIGHUP held back while the study storage is mid-step.

A sweep stops on those signals by raising `KeyboardInterrupt` (`harness.errors.Terminated` for
SIGTERM and SIGHUP) and settles the trials it holds. Optuna's `ask` is not atomic: it creates
the trial RUNNING, then samples its parameters; interrupted between the two, it returns nothing,
so no one holds a trial that stays RUNNING (until another worker's heartbeat grace, or the next
start, fails it). Such a step runs with the signals held, and they act once the caller holds
what the step made.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class HeldSignals:
    """The signals that came while held, in order."""

    def __init__(self) -> None:
        self.caught: list[int] = []

    def deliver(self) -> None:
        """Raise the first held signal again, now that its own handler is back: Ctrl-C's raises
        `KeyboardInterrupt` here, as it would have where it came."""
        if self.caught:
            first, self.caught = self.caught[0], []
            signal.raise_signal(first)


@contextlib.contextmanager
def signals_held() -> Iterator[HeldSignals]:
    """While inside, Ctrl-C, SIGTERM and SIGHUP are caught and kept; the caller `deliver`s them
    after the block, where it can settle what the block made. A second signal inside acts at once,
    so a step that hangs can still be stopped. Outside the main thread (which alone gets signals)
    nothing is held."""
    held = HeldSignals()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def keep(signum: int, _frame: FrameType | None) -> None:
        if held.caught:  # a second signal: the user insists (a storage that hangs), so it acts
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.raise_signal(signum)
        held.caught.append(signum)

    # A handler not set from Python (None) cannot be put back: that signal is left alone.
    previous = {sig: signal.getsignal(sig) for sig in _HELD}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}
    for sig in previous:
        signal.signal(sig, keep)
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Run the fake OpenAI server in a process of its own (for benchmarks: no shared GIL).

From a shell::

    python -m tests.openai_fake.serve --job-duration 10 --latency 0.15 --idle-timeout 120

prints one JSON line ``{"base_url": "http://127.0.0.1:PORT/v1", "pid": ...}`` as soon as it
listens (on 127.0.0.1 only), then serves until its stdin closes, it gets SIGTERM/SIGINT, or
``--idle-timeout`` seconds pass without a request. It then prints a last JSON line
``{"requests": n, "errors": [...], "serving_cpu_s": ...}`` (``errors``: replies that broke OpenAI's
spec, handler crashes) and exits 1 if there were errors, else 0. ``--idle-timeout none`` never
stops on its own. Options are the :class:`FakeConfig` fields of ``_OPTIONS``.

From Python, :class:`FakeOpenAIProcess` does all of that::

    with FakeOpenAIProcess(job_duration=10.0, latency=0.15) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
    server.summary  # the last line; leaving the block raises if the fake broke the spec
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from .objects import FakeConfig
from .server import FakeOpenAI

__all__ = ["FakeOpenAIProcess", "main"]

_ROOT = Path(__file__).resolve().parents[2]  # the repository, so `-m tests.openai_fake` imports
# FakeConfig fields that make sense from outside the process (no manual clock: nothing could
# advance it), with their command-line converters.
_OPTIONS: dict[str, Any] = {
    "job_duration": float,
    "latency": float,
    "idle_timeout": lambda text: None if text.lower() == "none" else float(text),
    "api_key": str,
    "seed": int,
    "min_examples": int,
    "validate": bool,
    "result_files_base64": bool,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.openai_fake.serve", description=__doc__.split("\n\n")[0]
    )
    defaults = FakeConfig()
    for name, kind in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=kind, default=default, help=f"default {default}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin closes, a signal, or the idle timeout; 1 if the fake broke the spec."""
    args = _parser().parse_args(argv)
    server = FakeOpenAI(**{name: getattr(args, name) for name in _OPTIONS}).start()
    cpu_at_start = time.process_time()  # after the spec is parsed: what serving costs

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_stop_at_eof, args=(sys.stdin, server), daemon=True).start()
    print(json.dumps({"base_url": server.base_url, "pid": os.getpid()}), flush=True)
    while not server.wait(0.5):
        pass
    server.stop()
    errors = list(server.state.errors)
    summary = {
        "requests": len(server.state.requests),
        "errors": errors,
        "serving_cpu_s": time.process_time() - cpu_at_start,
    }
    print(json.dumps(summary), flush=True)
    return 1 if errors else 0


def _stop_at_eof(stream: IO[str], server: FakeOpenAI) -> None:
    with contextlib.suppress(OSError, ValueError):
        stream.read()
    server.stop()


class FakeOpenAIProcess:
    """:class:`FakeOpenAI` in a child process; options are :class:`FakeConfig` fields.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1`` once started.
        summary: The child's last line once stopped: ``requests``, ``errors``,
            ``serving_cpu_s`` (CPU seconds the child spent after it started listening), and
            ``returncode``.
    """

    def __init__(self, start_timeout: float = 60.0, **options: Any) -> None:
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"options not available in a child process: {sorted(unknown)}")
        FakeConfig(**options)  # refuse bad values here, not as a child's usage message
        self.options = options
        self.start_timeout = start_timeout
        self.base_url = ""
        self.summary: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "tests.openai_fake.serve"]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if _OPTIONS[name] is bool:
                argv.append(flag if value else "--no-" + flag[2:])
            else:
                argv += [flag, str(value)]
        return argv

    def start(self) -> FakeOpenAIProcess:
        """Start the child and wait for the line with its URL."""
        proc = subprocess.Popen(
            self._argv(),
            cwd=_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._proc = proc
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            ready = selector.select(self.start_timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            self._kill()
            raise RuntimeError(f"the fake OpenAI server process did not start: {self._argv()}")
        self.base_url = json.loads(line)["base_url"]
        return self

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Close the child's stdin (it stops), wait for it, and return its summary."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.summary
        try:
            rest, _ = proc.communicate(timeout=timeout)  # closes stdin: the child stops
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        lines = [line for line in rest.splitlines() if line.strip()]
        self.summary = json.loads(lines[-1]) if lines else {}
        self.summary["returncode"] = proc.returncode
        return self.summary

    def raise_errors(self) -> None:
        """Raise ``AssertionError`` if the child's fake broke the spec or did not exit cleanly."""
        errors = self.summary.get("errors")
        if errors:
            raise AssertionError("the fake OpenAI server found problems:\n" + "\n".join(errors))
        if self.summary.get("returncode") != 0 or "requests" not in self.summary:
            raise AssertionError(f"the fake OpenAI server process failed: {self.summary}")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.communicate()

    def __enter__(self) -> FakeOpenAIProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.raise_errors()


if __name__ == "__main__":
    sys.exit(main())

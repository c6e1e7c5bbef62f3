"""Every test runs isolated from the shell that started pytest: no provider key or endpoint, no
tracking server, not the user's caches (`tests/conftest.py`, `isolated`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.data.bundled import CACHE_ENV
from harness.tracking.store import cache_dir
from tests.conftest import _LEAKS


def test_no_key_endpoint_or_tracking_server_reaches_a_test() -> None:
    assert not [var for var in _LEAKS if var in os.environ]


def test_caches_are_the_sessions_not_the_users(session_cache: Path) -> None:
    assert cache_dir().is_relative_to(session_cache)
    assert not cache_dir().is_relative_to(Path.home() / ".cache")
    # The offline datasets are read where `make setup` put them: no test downloads them.
    assert os.environ[CACHE_ENV]


def test_a_child_process_inherits_the_isolation(session_cache: Path) -> None:
    # The CLI tests start `harness` as a process: it must see the same environment.
    code = "import os; print(os.environ.get('XDG_CACHE_HOME'), os.environ.get('OPENAI_API_KEY'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(session_cache), "None"]

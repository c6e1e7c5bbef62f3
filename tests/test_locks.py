"""The study's named locks: held where the study lives, never silently skipped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest

from harness.errors import ConfigError
from harness.sweep.locks import study_lock


def _overlaps(study: optuna.Study) -> int:
    """Two threads take the same lock, each holding it a while; how many were inside at once."""
    inside, most, guard = 0, 0, threading.Lock()
    ready = threading.Barrier(2)

    def hold() -> None:
        nonlocal inside, most
        ready.wait()  # both threads reach the lock together: an absent lock lets both in
        with study_lock(study, "budget"):
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.2)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return most


def test_a_sqlite_study_lock_excludes(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s")
    assert _overlaps(study) == 1


def test_an_in_memory_study_is_locked_in_its_process() -> None:
    # The storage lives in this process only: a lock of the process guards it (it used to be no
    # lock at all).
    assert _overlaps(optuna.create_study(study_name="memory")) == 1


def test_a_storage_the_harness_cannot_lock_is_refused_loudly(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(storage=storage, study_name="journal")
    with pytest.raises(ConfigError, match="cannot lock"), study_lock(study, "budget"):
        pass

"""One answer to where the harness caches things (`harness.locations`), asked by every stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends.hosted._tokens import default_cache_dir
from harness.backends.local._calibration import cache_file
from harness.backends.local._lm_models import model_cache
from harness.data.bundled import cache_dir as bundled_dir
from harness.locations import cache_dir, datasets_dir
from harness.tracking.store import cache_dir as store_dir


def test_every_stage_caches_under_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == store_dir() == tmp_path / "harness"
    assert model_cache() == tmp_path / "harness" / "models"
    assert default_cache_dir() == tmp_path / "harness" / "tiktoken"
    assert cache_file({"model": "m"}).parent == tmp_path / "harness" / "local-calibration"


def test_without_xdg_cache_home_it_is_the_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("HARNESS_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("models") == tmp_path / ".cache" / "harness" / "models"
    assert datasets_dir() == bundled_dir() == tmp_path / ".cache" / "harness"


def test_datasets_follow_harness_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "data"))
    assert bundled_dir() == tmp_path / "data"

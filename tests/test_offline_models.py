"""A local model name resolves without a network: a misspelt one fails at once, naming the
field, the value and the models there are offline (found in a user walk: with HF_HUB_OFFLINE
unset, the hub was retried for about 40 s before the error)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from harness.backends.local._lm_models import resolve_lm_path
from harness.backends.local._models import resolve_model_path
from harness.errors import BackendError
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import ROOT, review_rows, write_csv, write_experiment

_HUB_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def _no_hub_switch() -> dict[str, str]:
    """The environment of a user who never heard of HF_HUB_OFFLINE."""
    return {k: v for k, v in os.environ.items() if k not in _HUB_SWITCHES}


def test_a_misspelt_encoder_fails_at_once_in_a_fresh_process(tmp_path: Path) -> None:
    storage = tmp_path / "optuna.db"
    path = write_experiment(
        tmp_path,
        write_csv(tmp_path / "reviews.csv", review_rows(20)),
        study={"n_trials": 1, "sampler": {"kind": "random"}, "storage": f"sqlite:///{storage}"},
        tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    env = {**_no_hub_switch(), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "harness", "sweep", str(path), "--yes"]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--set", "backend.model=all-MiniLM-L6-v3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - started
    assert done.returncode != 0, done.stdout
    err = done.stderr
    assert "Traceback" not in err and "Retrying" not in err and "huggingface.co" not in err, err
    assert "backend.model" in err and "all-MiniLM-L6-v3" in err, err
    assert "all-MiniLM-L6-v2" in err and "all-mpnet-base-v2" in err, err  # what there is
    # The hub's retries alone sleep 1 + 2 + 4 + 8 + 8 s per file, for two files: 46 s.
    assert seconds < 40, f"{seconds:.0f} s: the hub was tried"
    assert not storage.exists() or not _studies(storage), "a study was left behind"


def _studies(storage: Path) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{storage}")]


def test_a_misspelt_local_lm_names_the_field_and_the_offline_model(tmp_path: Path) -> None:
    path = write_experiment(
        tmp_path,
        write_csv(tmp_path / "reviews.csv", review_rows(20)),
        backend={"kind": "local_lm", "model": "SmolLM3-135M-Instruct", "max_length": 64},
    )
    result = run_cli("sweep", str(path), "--yes", env=dict.fromkeys(_HUB_SWITCHES))
    assert_clean_error(result, "backend.model", "SmolLM3-135M-Instruct", "SmolLM2-135M-Instruct")
    assert "HF_HUB_OFFLINE=0" in result.stderr  # the way to let it fetch a hub id
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_a_sampled_base_model_is_named_as_the_search_space_field(tmp_path: Path) -> None:
    space = {
        "n_epochs": 1,
        "learning_rate_multiplier": 2.0,
        "batch_size": 8,
        "base_model": {"type": "categorical", "choices": ["all-MiniLM-L6-v2", "mpnett"]},
    }
    path = write_experiment(tmp_path, write_csv(tmp_path / "r.csv", review_rows(20)), space)
    result = run_cli("sweep", str(path), "--yes", env=dict.fromkeys(_HUB_SWITCHES))
    assert_clean_error(result, "search_space.base_model", "'mpnett'", "all-mpnet-base-v2")


def _cached_hub_model(cache: Path, repo: str) -> Path:
    """A model as huggingface_hub caches it: a snapshot folder and a ref pointing at it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    return snapshot


def test_a_hub_id_in_the_cache_loads_from_there_and_nothing_else_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    snapshot = _cached_hub_model(tmp_path, "some-org/tiny-encoder")
    for switch in _HUB_SWITCHES:
        monkeypatch.delenv(switch, raising=False)
    assert resolve_model_path("some-org/tiny-encoder") == str(snapshot)
    assert resolve_lm_path("some-org/tiny-encoder") == str(snapshot)
    with pytest.raises(BackendError, match="not available offline"):
        resolve_model_path("some-org/not-cached")
    # A user who asks for the hub gets the id back, for transformers to fetch.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model_path("some-org/not-cached") == "some-org/not-cached"

"""Shared fixtures. Every test runs in its own temp directory with its own tracking store and
study storage, no OpenAI key in the environment, and hubs switched off."""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.data.bundled import CACHE_ENV, cache_dir
from harness.records import PreparedData, Split

ROOT = Path(__file__).resolve().parents[1]

_GOOD = [
    "a delight",
    "wonderful",
    "moving and funny",
    "a triumph",
    "beautifully acted",
    "great fun",
]
_BAD = ["a mess", "dull", "tedious and long", "a disaster", "badly acted", "a waste of time"]
_SUBJECTS = ["The film", "This movie", "The sequel", "Its second half", "The whole thing"]


# The cheapest search space that still varies: one epoch, batch 8, the learning rate sampled.
ONE_EPOCH_SPACE = {
    "n_epochs": 1,
    "learning_rate_multiplier": {"type": "float", "low": 2.0, "high": 6.0},
    "batch_size": 8,
}


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module imports `harness.cli`: its console is sized from `COLUMNS` when
    piped, and pytest-xdist gives its workers `COLUMNS=80`; tests read the CLI as a pipe does."""
    for var in ("COLUMNS", "LINES"):
        os.environ.pop(var, None)


# What a test must not inherit from the shell that runs it: provider keys and endpoints (a real
# key would reach a real API), a tracking server, and the user's own caches.
_LEAKS = (
    "MLFLOW_TRACKING_URI",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_ACCESS_TOKEN",
    "TOGETHER_API_KEY",
    "TOGETHER_BASE_URL",
    "NEBIUS_API_KEY",
    "NEBIUS_BASE_URL",
    "TIKTOKEN_CACHE_DIR",
    "HARNESS_HOST",
)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the whole test session (calibrations, converted models, tokenizer
    files, store templates), never the user's `~/.cache`: measured once per session, shared."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(scope="session", autouse=True)
def isolated_session(session_cache: Path) -> Iterator[None]:
    """The environment every fixture sees, set before the first one runs (a module's trained
    model and a test that reloads it must read one calibration, from one cache)."""
    with pytest.MonkeyPatch.context() as patch:
        for var in _LEAKS:
            patch.delenv(var, raising=False)
        # The offline datasets stay where `make setup` fetched them (verified by SHA-256 on
        # use), so no test downloads them; everything else the harness caches goes to the
        # session's folder.
        patch.setenv(CACHE_ENV, str(cache_dir()))
        patch.setenv("XDG_CACHE_HOME", str(session_cache))
        # One calibration per session, however busy parallel workers make the machine: a
        # measurement marked busy would be replaced mid-session (tests/test_calibration_load.py).
        patch.setenv("HARNESS_CALIBRATION_MAX_LOAD", "1e9")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TOKENIZERS_PARALLELISM", "false")
        yield


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in _LEAKS:  # whatever an earlier test's fixture left is gone
        monkeypatch.delenv(var, raising=False)
    # A developer's own `harness prices refresh` never changes what tests price.
    monkeypatch.setenv("HARNESS_PRICES_FILE", str(tmp_path / "prices.local.yaml"))
    return tmp_path


def review_rows(n_per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    """Distinct, clearly positive / negative one-line reviews (no duplicates)."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    for label, phrases in (("positive", _GOOD), ("negative", _BAD)):
        seen: set[str] = set()
        while len(seen) < n_per_class:
            text = f"{rng.choice(_SUBJECTS)} is {rng.choice(phrases)}, {rng.randint(1, 10_000)}."
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
    rng.shuffle(rows)
    return rows


def write_csv(
    path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_experiment(
    directory: Path,
    data_path: Path,
    space: dict | None = None,
    **overrides: object,
) -> Path:
    """A small local experiment over `data_path`: MiniLM at max_length 32, two short trials."""
    space_path = directory / "space.yaml"
    space_path.write_text(
        yaml.safe_dump(
            space
            or {
                "n_epochs": {"type": "int", "low": 1, "high": 2},
                "learning_rate_multiplier": {"type": "float", "low": 2.0, "high": 6.0, "log": True},
                "batch_size": 8,
            }
        )
    )
    config: dict = {
        "name": "tiny",
        "seed": 3,
        "dataset": {"source": str(data_path), "split": {"validation": 0.2, "test": 0.2}},
        "backend": {"kind": "local", "max_length": 32, "models_dir": str(directory / "models")},
        "search_space": str(space_path),
        "study": {"n_trials": 2, "sampler": {"kind": "random"}},
    }
    for key, value in overrides.items():
        config[key] = value
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "reviews.csv", review_rows(20))


def prepared(
    rows: list[tuple[str, str]], labels: tuple[str, ...], digest: str, name: str
) -> PreparedData:
    """40 labelled rows as prepared data: 24 train, 8 validation, 8 test, in order."""

    def split(part: list[tuple[str, str]]) -> Split:
        return Split(tuple(t for t, _ in part), tuple(y for _, y in part))

    return PreparedData(
        train=split(rows[:24]),
        validation=split(rows[24:32]),
        test=split(rows[32:40]),
        labels=labels,
        digest=digest,
        ordinal=False,
        name=name,
    )


def openai_experiment(
    directory: Path,
    name: str,
    n_trials: int,
    backend: dict[str, Any] | None = None,
    study: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """An OpenAI experiment over 80 short reviews (48 train, 16 validation, 16 test), a random
    sampler over epochs and learning rate; OPENAI_BASE_URL says where the API is."""
    csv = write_csv(directory / "reviews.csv", review_rows(40, seed=4))
    space = directory / "space.yaml"
    space.write_text(
        "n_epochs: {type: int, low: 1, high: 3}\n"
        "learning_rate_multiplier: {type: float, low: 0.5, high: 2.0, log: true}\n"
        "batch_size: 8\n"
    )
    config: dict[str, Any] = {
        "name": name,
        "seed": 5,
        "dataset": {"source": str(csv), "split": {"validation": 0.2, "test": 0.2}},
        "backend": {
            "kind": "openai",
            "model": "gpt-4.1-nano-2025-04-14",
            "max_concurrency": 2,
            "poll_interval": 0.05,
            "poll_max_interval": 0.1,
            **(backend or {}),
        },
        "search_space": str(space),
        "study": {"n_trials": n_trials, "sampler": {"kind": "random"}, **(study or {})},
        **extra,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path

"""Provenance: git commit and dirty flag, package versions, tags ready for MLflow."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from harness.tracking.provenance import (
    NOT_INSTALLED,
    PACKAGES,
    package_versions,
    provenance_tags,
    run_provenance,
)


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q")
    (path / "experiment.yaml").write_text("seed: 1\n")
    _git(path, "add", "experiment.yaml")
    _git(path, "commit", "-q", "-m", "first")
    return path


def test_git_commit_and_dirty_flag(repo: Path) -> None:
    info = run_provenance(repo)
    assert info["git_commit"] == _git(repo, "rev-parse", "HEAD")
    assert info["git_dirty"] == "false"

    (repo / "notes.txt").write_text("untracked files do not make the tree dirty")
    assert run_provenance(repo)["git_dirty"] == "false"

    (repo / "experiment.yaml").write_text("seed: 2\n")
    assert run_provenance(repo)["git_dirty"] == "true"


def test_outside_a_repository_or_without_git_there_are_no_git_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a parent repo
    info = run_provenance(plain)
    assert "git_commit" not in info and "git_dirty" not in info
    assert info["python"].count(".") == 2

    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries-here"))
    assert "git_commit" not in run_provenance(plain)


def test_package_versions_come_from_metadata() -> None:
    versions = package_versions()
    assert set(versions) == set(PACKAGES)
    assert versions["mlflow"] == metadata.version("mlflow")
    assert versions["optuna"] == metadata.version("optuna")
    assert package_versions(("surely-not-an-installed-dist",)) == {
        "surely-not-an-installed-dist": NOT_INSTALLED
    }


def test_provenance_tags_are_prefixed_strings_with_seed_and_digest(repo: Path) -> None:
    tags = provenance_tags(seed=17, data_digest="abc123", cwd=repo)
    assert tags["harness.seed"] == "17"
    assert tags["harness.data_digest"] == "abc123"
    assert tags["harness.git_commit"] == _git(repo, "rev-parse", "HEAD")
    assert tags["harness.versions.transformers"] == package_versions()["transformers"]
    assert {"harness.python", "harness.platform", "harness.git_dirty"} <= set(tags)
    assert all(key.startswith("harness.") for key in tags)
    assert all(isinstance(value, str) and value for value in tags.values())


def test_provenance_imports_nothing_heavy() -> None:
    code = (
        "import sys; from harness.tracking.provenance import run_provenance; run_provenance();"
        "heavy = ('torch', 'transformers', 'openai', 'mlflow');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr

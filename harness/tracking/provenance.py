"""What it takes to reproduce a run: code version, package versions, interpreter, platform.

Cheap on purpose: package versions come from `importlib.metadata` (nothing heavy is imported)
and the git commit from two short `git` calls, so the tracker can tag every run with it. Every
value is a string, ready to be an MLflow tag. A machine without git, or a directory that is not
a repository, simply yields no git keys.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness.tracking.record import DATA_DIGEST_TAG

# The distributions whose versions change a result (or the cost of getting it).
PACKAGES = (
    "harness",
    "torch",
    "transformers",
    "mlflow",
    "optuna",
    "openai",
    "scikit-learn",
)
NOT_INSTALLED = "not installed"
TAG_PREFIX = "harness."
_GIT_TIMEOUT_SECONDS = 5.0


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution, or "not installed"."""
    versions: dict[str, str] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    """Output of `git ARGS` in `cwd`, or None when git is missing, fails or hangs."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """`git_commit` and `git_dirty` ("true"/"false") of the repository holding `cwd`.

    Untracked files do not make the tree dirty (run data, caches); modified tracked files do,
    because then the commit alone does not reproduce the run.

    Returns:
        An empty dict when `cwd` is not inside a git repository or git is not installed.
    """
    where = cwd or Path.cwd()
    commit = _git(["rev-parse", "HEAD"], where)
    if not commit:
        return {}
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {"git_commit": commit, "git_dirty": dirty}


def run_provenance(cwd: Path | None = None) -> dict[str, str]:
    """Code, interpreter and package versions of this process, as flat string values.

    Keys: `git_commit` and `git_dirty` (only inside a git repository), `python`, `platform`, and
    `versions.<distribution>` for each of `PACKAGES`.

    Args:
        cwd: The directory whose git repository is asked; the current directory by default.
    """
    info = git_state(cwd)
    info["python"] = platform.python_version()
    info["python_implementation"] = sys.implementation.name
    info["platform"] = platform.platform()
    info.update({f"versions.{name}": v for name, v in package_versions().items()})
    return info


def provenance_tags(
    seed: int,
    data_digest: str,
    cwd: Path | None = None,
    info: dict[str, str] | None = None,
) -> dict[str, str]:
    """The MLflow tags that make a run reproducible, e.g. `harness.git_commit`.

    Args:
        seed: The seed the run used (the experiment seed for a study, the trial seed for a trial).
        data_digest: Content digest of the prepared train / validation / test data.
        cwd: The directory whose git repository is asked; the current directory by default.
        info: A `run_provenance()` already taken (a sweep takes it once, not per trial: it
            runs git twice).

    Returns:
        `run_provenance()` under the `harness.` prefix, plus `harness.seed` and
        `harness.data_digest`.
    """
    found = info if info is not None else run_provenance(cwd)
    tags = {f"{TAG_PREFIX}{key}": value for key, value in found.items()}
    tags[f"{TAG_PREFIX}seed"] = str(seed)
    tags[DATA_DIGEST_TAG] = data_digest
    return tags

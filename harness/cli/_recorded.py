"""What you told a study is kept: an experiment file that no longer says what its study was made
with does not silently replace it.

A study records the experiment it was created from (the file's config with the `--set`
overrides applied, `harness.tracking.record.experiment_attrs`). Opened later through a file whose
config (with this command's `--set`) differs from that record, the command says so on stderr,
naming the keys that differ, and uses the study's recorded experiment with this command's
`--set` on top: the study goes on as it was made (to start another, set `study.name`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import yaml

from harness.config import Experiment, read_yaml
from harness.errors import ConfigError, HarnessError
from harness.locations import redact_text
from harness.tracking.record import StudyOrigin

Report = Callable[[str], None]
_SHOWN = 4  # differing keys named before "and N more"


def as_recorded(
    experiment: Experiment,
    overrides: list[str] | None,
    lookup: Callable[[str, str, list[str] | None], tuple[StudyOrigin, Experiment] | None],
    report: Report,
) -> Experiment:
    """`experiment`, or its study's recorded experiment when the two differ (said on `report`).

    `lookup(name, storage_url, overrides)` gives a study's origin and its recorded experiment
    with `overrides` on top, or None where there is no such study, or it recorded nothing.
    """
    name, url = experiment.study_name, experiment.config.study.storage
    try:
        found = lookup(name, url, overrides)
    except HarnessError:
        return experiment  # the command itself will say what is wrong with the storage
    if found is None:
        return experiment
    origin, recorded = found
    differences = _differences(_comparable(experiment), _comparable(recorded))
    if not differences:
        return experiment
    shown = ", ".join(differences[:_SHOWN])
    if len(differences) > _SHOWN:
        shown += f" and {len(differences) - _SHOWN} more"
    made = " ".join(["made from", origin.path or "?", *(f"--set {o}" for o in origin.overrides)])
    given = " with these --set" if overrides else ""
    report(
        f"note: study {name!r} was {made}; {experiment.path}{given} now differs in {shown}: "
        "using the study's recorded experiment (--set KEY=VALUE changes a value for this "
        "command; set study.name to start another study)"
    )
    return Experiment(recorded.config, experiment.path, recorded.raw, recorded.overrides)


def _comparable(experiment: Experiment) -> dict[str, Any]:
    """The config as a study records it (secrets blanked), its search space read in, and
    without the storage (where a study is found is not what it was made with)."""
    text = redact_text(yaml.safe_dump(experiment.raw, sort_keys=True, allow_unicode=True))
    raw: dict[str, Any] = yaml.safe_load(text)
    if isinstance(raw.get("study"), dict):
        raw["study"].pop("storage", None)
    space = raw.get("search_space")
    if isinstance(space, str):
        with contextlib.suppress(ConfigError, OSError):  # else compared as the path it is
            raw["search_space"] = read_yaml(experiment.resolve_path(space))
    return raw


def _differences(left: Any, right: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs."""
    if isinstance(left, dict) and isinstance(right, dict):
        found: list[str] = []
        for key in sorted(set(left) | set(right), key=str):
            found += _differences(left.get(key), right.get(key), f"{prefix}{key}.")
        return found
    return [] if left == right else [prefix.rstrip(".") or "(everything)"]

"""Search-space files: Optuna's short form in YAML, turned into Optuna distributions.

```yaml
n_epochs: {type: int, low: 1, high: 3}
learning_rate_multiplier: {type: float, low: 0.5, high: 4.0, log: true}
batch_size: {type: categorical, choices: [16, 32]}
train_examples: 1000            # a plain value fixes the parameter
```

`n_epochs`, `learning_rate_multiplier` and `batch_size` are required; `base_model` and
`train_examples` are optional (the backend's model and the whole training split by default);
`lora_rank` and `lora_alpha` are optional for the local LM backend (its config's by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from harness.config import Experiment, read_yaml
from harness.errors import ConfigError
from harness.records import TrialSpec

REQUIRED = ("n_epochs", "learning_rate_multiplier", "batch_size")
OPTIONAL = ("base_model", "train_examples", "lora_rank", "lora_alpha")
# The Python type every value of a parameter must have (bool is excluded from int on purpose).
VALUE_TYPES: dict[str, tuple[type, ...]] = {
    "n_epochs": (int,),
    "learning_rate_multiplier": (int, float),
    "batch_size": (int,),
    "base_model": (str,),
    "train_examples": (int,),
    "lora_rank": (int,),
    "lora_alpha": (int,),
}
_KEYS = {
    "int": {"type", "low", "high", "step", "log"},
    "float": {"type", "low", "high", "step", "log"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class SearchSpace:
    """Distributions for the sampled parameters and values for the fixed ones."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    path: Path

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every sampled parameter, for Optuna's GridSampler."""
        grid: dict[str, list[Any]] = {}
        for name, dist in self.distributions.items():
            grid[name] = _grid_values(name, dist, self.path)
        return grid


def load_search_space(source: Path | Mapping[str, Any], where: Path | None = None) -> SearchSpace:
    """Read and validate a search-space file, or a space given inline (`where`: the experiment
    file it is in, for messages). Raises ConfigError naming the file and parameter."""
    if isinstance(source, Mapping):
        path = Path(f"{where or 'the experiment'}: search_space")
        raw: Any = dict(source)
    else:
        path, raw = source, read_yaml(source)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of parameter names to ranges")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        allowed = ", ".join(REQUIRED + OPTIONAL)
        raise ConfigError(f"{path}: unknown parameter {unknown[0]!r} (allowed: {allowed})")
    missing = [name for name in REQUIRED if name not in raw]
    if missing:
        raise ConfigError(
            f"{path}: missing parameter {missing[0]!r} (required: {', '.join(REQUIRED)})"
        )
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            distributions[name] = _distribution(name, value, path)
        else:
            _check_value(name, value, path)
            fixed[name] = value
    return SearchSpace(distributions=distributions, fixed=fixed, path=path)


def experiment_space(experiment: Experiment) -> SearchSpace:
    """The experiment's search space: its file, or the mapping given inline."""
    source = experiment.config.search_space
    if isinstance(source, dict):
        return _for_backend(load_search_space(source, experiment.path), experiment)
    path = experiment.resolve_path(source)
    if not path.is_file():
        looked = (
            ""
            if path.is_absolute()
            else (
                f" (looked up from the current directory {Path.cwd()}, then beside the experiment "
                "file and one folder above it)"
            )
        )
        raise ConfigError(f"{experiment.path}: search_space: {source}: no such file{looked}")
    return _for_backend(load_search_space(path), experiment)


def _for_backend(space: SearchSpace, experiment: Experiment) -> SearchSpace:
    """Refuse a LoRA parameter the backend does not read: the sampler would spend trials on a
    value no trial uses, and run names would show it."""
    backend = experiment.config.backend
    fields = type(backend).model_fields
    for name in ("lora_rank", "lora_alpha"):
        if name not in space.distributions and name not in space.fixed:
            continue
        if name not in fields:
            raise ConfigError(
                f"{space.path}: {name}: the {backend.kind} backend does not use it (only "
                f"backends with a {name} setting do, such as local_lm); remove it"
            )
        # The backend's own setting has a ceiling; a sampled value must keep to it too.
        most = min(
            (c.le for c in fields[name].metadata if getattr(c, "le", None) is not None),
            default=None,
        )
        over = [v for v in _sizes(space, name, "high") if most is not None and v > most]
        if over:
            raise ConfigError(
                f"{space.path}: {name}: {max(over)} is more than the {backend.kind} backend "
                f"takes ({most})"
            )
    return space


def oversized_train_examples(space: SearchSpace, rows: int) -> str | None:
    """A warning when the space can ask for more training examples than the split holds (a
    trial that does trains on all `rows`, so those sizes are one); None when none can."""
    over = sorted(v for v in _train_example_sizes(space, "high") if v > rows)
    if not over:
        return None
    sizes = ", ".join(f"{v:,}" for v in over)
    return (
        f"warning: the search space's train_examples {sizes} "
        f"{'exceeds' if len(over) == 1 else 'exceed'} the {rows:,} training rows: a trial "
        f"that samples {'it' if len(over) == 1 else 'them'} trains on all {rows:,}"
    )


def check_train_examples(space: SearchSpace, classes: int) -> None:
    """Refuse a `train_examples` below the number of classes: a stratified training subset
    keeps one example of every class, so no trial could draw it.

    Raises:
        ConfigError: Naming the file, the parameter, the smallest such value and the minimum.
    """
    values = _train_example_sizes(space, "low")
    if values and min(values) < classes:
        raise ConfigError(
            f"{space.path}: train_examples: {min(values)} is fewer than the data's {classes} "
            f"classes; a stratified training subset needs one example of each, so use at "
            f"least {classes}"
        )


def capped_train_examples(spec: TrialSpec, rows: int) -> str | None:
    """What a trial that asks for more training examples than the split holds is told."""
    if spec.train_examples is None or spec.train_examples <= rows:
        return None
    return (
        f"{spec.run_name()}: train_examples {spec.train_examples} is more than the {rows} "
        f"training rows; it trains on all {rows} (logged as train_examples={rows})"
    )


def _distribution(name: str, spec: dict[str, Any], path: Path) -> BaseDistribution:
    where = f"{path}: {name}"
    kind = spec.get("type")
    if kind not in _KEYS:
        raise ConfigError(f"{where}: type must be int, float or categorical, got {kind!r}")
    extra = sorted(set(spec) - _KEYS[kind])
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} for type {kind}")
    if kind == "float" and float not in VALUE_TYPES[name]:
        # Optuna would draw 5.7 and the trial cut it to 5: `high` never reached, and the study
        # recording a value no trial used.
        raise ConfigError(
            f"{where}: type float draws fractions, but {name} is a whole number; use type: int"
        )
    try:
        if kind == "categorical":
            return _categorical(name, spec.get("choices"), path)
        if "low" not in spec or "high" not in spec:
            raise ValueError("needs both low and high")
        _check_value(name, spec["low"], path)
        _check_value(name, spec["high"], path)
        log, step = _log_and_step(kind, spec)
        if kind == "int":
            return IntDistribution(spec["low"], spec["high"], log=log, step=step or 1)
        return FloatDistribution(spec["low"], spec["high"], log=log, step=step)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _categorical(name: str, choices: Any, path: Path) -> CategoricalDistribution:
    if not isinstance(choices, list) or not choices:
        raise ValueError("choices must be a non-empty list")
    for index, choice in enumerate(choices):
        _check_value(name, choice, path)
        if choice in choices[:index]:  # Optuna would sample a repeated choice twice as often
            raise ValueError(f"choices must be distinct, {choice!r} is given twice")
    return CategoricalDistribution(choices)


def _log_and_step(kind: str, spec: dict[str, Any]) -> tuple[bool, Any]:
    """`log` and `step` checked here, since Optuna takes `log: maybe` as true and only warns
    (shrinking the range) when the step does not divide it."""
    log, step, low, high = spec.get("log", False), spec.get("step"), spec["low"], spec["high"]
    if not isinstance(log, bool):
        raise ValueError(f"log must be true or false, got {log!r}")
    if step is None:
        return log, None
    types = (int,) if kind == "int" else (int, float)
    if isinstance(step, bool) or not isinstance(step, types) or step <= 0:
        raise ValueError(f"step must be a positive {kind}, got {step!r}")
    count = (high - low) / step
    if low <= high and abs(count - round(count)) > 1e-9 * max(1.0, count):
        raise ValueError(f"step {step} does not divide the range {low} to {high}")
    return log, step


def _check_value(name: str, value: Any, path: Path) -> None:
    types = VALUE_TYPES[name]
    if isinstance(value, bool) or not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{path}: {name}: expected {expected}, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        raise ConfigError(f"{path}: {name}: must be positive, got {value!r}")


def _grid_values(name: str, dist: BaseDistribution, path: Path) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):  # on a log scale too: its step is 1
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.low == dist.high:
        return [dist.low]
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        count = round((dist.high - dist.low) / dist.step)
        return [round(dist.low + i * dist.step, 10) for i in range(count + 1)]
    raise ConfigError(
        f"{path}: {name}: the grid sampler needs choices or a linear step, not a continuous range"
    )


def _train_example_sizes(space: SearchSpace, end: Literal["low", "high"]) -> list[int]:
    """The training-set sizes the space can ask for (`_sizes`)."""
    return _sizes(space, "train_examples", end)


def _sizes(space: SearchSpace, name: str, end: Literal["low", "high"]) -> list[int]:
    """The whole numbers the space can give `name`: the fixed one, every choice, or an int
    range's `end` (none when the space does not set it)."""
    dist = space.distributions.get(name)
    if name in space.fixed:
        return [space.fixed[name]]
    if isinstance(dist, CategoricalDistribution):
        return [v for v in dist.choices if isinstance(v, int)]
    if isinstance(dist, IntDistribution):
        return [dist.high if end == "high" else dist.low]
    return []

"""Experiment files: pydantic models with `extra="forbid"`, so a typo is an error, not a default.

An experiment file names its dataset, backend, search-space file, study and budget. `--set
key=value` overrides are applied to the raw YAML and re-validated by the same models.
"""

from __future__ import annotations

import codecs
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.backends.registry import BACKEND_KINDS, KINDS, AnyBackendConfig, BackendConfig
from harness.backends.settings import Strict

# Re-exported: the commands read YAML files and apply `--set` items the way this package does.
from harness.config._files import apply_overrides as apply_overrides
from harness.config._files import read_yaml as read_yaml
from harness.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
EXPERIMENTS_DIR = "experiments"

Objective = Literal["accuracy", "cost"]
DEFAULT_OBJECTIVES: tuple[Objective, ...] = ("accuracy", "cost")


class SplitConfig(Strict):
    """Shares held out for validation (every choice is made on it) and test (it only confirms)."""

    validation: float = Field(0.15, gt=0.0, lt=0.5)
    test: float = Field(0.15, gt=0.0, lt=0.5)


class DatasetConfig(Strict):
    """Where the labelled texts come from and how to read them.

    `source` is a bundled short name (`rotten_tomatoes`, `tweets`), a CSV / JSONL / Parquet file, or
    `hf:NAME` for a Hugging Face dataset (needs network access and the `datasets` package).
    """

    source: str = Field(min_length=1)
    text_column: str = "text"
    label_column: str = Field("label", validate_default=True)  # checked against text_column
    labels: list[str] | None = None
    max_rows: int | None = Field(None, ge=10)
    hf_split: str = "train"
    ordinal: bool | None = None
    system_prompt: str = "Classify the text. Answer with the label only."
    split: SplitConfig = SplitConfig()
    # How a CSV / JSONL / JSON file's bytes are decoded (any Python codec name: latin-1, cp1252);
    # UTF-8 also drops a byte-order mark. Bundled, Parquet and hf: sources carry their own.
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None
        if not getattr(info, "_is_text_encoding", True):  # base64, zlib: bytes to bytes
            raise ValueError(f"{value!r} is not a text encoding (e.g. utf-8, latin-1, cp1252)")
        return value

    @field_validator("label_column")
    @classmethod
    def _label_is_not_text(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("text_column"):  # declared first, so validated first
            raise ValueError(
                f"{value!r} is dataset.text_column too: the texts would be their own labels; "
                "name the column holding the labels"
            )
        return value

    @field_validator("hf_split")
    @classmethod
    def _hf_split_for_hf_sources(cls, value: str, info: ValidationInfo) -> str:
        source = str(info.data.get("source", ""))  # declared first, so validated first
        if value != "train" and not source.startswith("hf:"):
            raise ValueError(
                f"applies only to an hf:NAME source, not to {source!r} (a file's rows are split "
                "by dataset.split)"
            )
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _numbers_as_labels(cls, value: Any) -> Any:
        """`labels: [1, 2, 3]` as YAML writes star ratings: read as the data's labels are
        (`3` and `3.0` both become "3")."""
        if not isinstance(value, list):
            return value
        return [_number_label(v) for v in value]

    @field_validator("labels")
    @classmethod
    def _a_label_set(cls, value: list[str] | None) -> list[str] | None:
        """The whole label set: a classifier needs two, and a repeated one is a typo."""
        if value is None:
            return None
        if len(value) < 2:
            raise ValueError(f"give at least two labels (the data's classes), got {value}")
        for index, label in enumerate(value):
            if label in value[:index]:
                raise ValueError(f"{label!r} is given twice")
        return value


def _number_label(value: Any) -> Any:
    if isinstance(value, bool):  # `labels: [yes, no]`: YAML 1.1 booleans, never meant as such
        spelt = "yes, true or on" if value else "no, false or off"
        raise ValueError(
            f"YAML reads an unquoted {str(value).lower()} (written {spelt}) as a boolean, not a "
            "label: quote each such label, e.g. labels: ['yes', 'no']"
        )
    if not isinstance(value, int | float):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


class SamplerConfig(Strict):
    """Which Optuna sampler proposes trials. `fidelity`: multi-fidelity search (successive
    halving over the training-set size, new configurations drawn by TPE; see
    `harness.sweep.fidelity`); it needs `train_examples` sampled among two values or more."""

    kind: Literal["tpe", "random", "nsga2", "grid", "fidelity"] = "tpe"


class StudyConfig(Strict):
    """The Optuna study: which sampler, how many trials, what to optimise, where to store it.

    With two objectives (the default) the study is told validation accuracy and cost, and the
    answer comes from the Pareto front of validation accuracy against cost (the test set only
    confirms it). With `objectives: [accuracy]`, accuracy alone is maximised, subject to
    `max_trial_cost_usd` when given.
    """

    name: str | None = None
    n_trials: int = Field(8, ge=1)
    objectives: list[Objective] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    max_trial_cost_usd: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    sampler: SamplerConfig = SamplerConfig()
    storage: str = DEFAULT_STORAGE
    # Stop a trial after an epoch when even an optimistic finish cannot reach the front
    # (`harness.sweep.stopping`); only on backends that train epoch by epoch (local).
    early_stopping: bool = True

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, value: list[str]) -> list[str]:
        if value not in (["accuracy", "cost"], ["accuracy"]):
            raise ValueError(f"must be [accuracy, cost] or [accuracy], got {value}")
        return value


# The URI schemes MLflow opens a tracking store at (a plain path is a folder store); another is
# refused here, since MLflow would raise deep inside the first command that opens it.
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


class TrackingConfig(Strict):
    uri: str | None = None
    experiment_name: str | None = None

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        problem = tracking_uri_problem(value or "")
        if problem:
            raise ValueError(problem)
        return value


def tracking_uri_problem(uri: str) -> str | None:
    """What is wrong with a tracking URI MLflow cannot open (None when it can)."""
    scheme = uri.partition("://")[0] if "://" in uri else None
    if scheme is None or scheme.partition("+")[0] in TRACKING_SCHEMES:
        return None
    return (
        f"unsupported scheme {scheme!r} (use sqlite:///PATH, a folder, http(s)://HOST, "
        f"or one of {', '.join(TRACKING_SCHEMES)})"
    )


class ExperimentConfig(Strict):
    """One experiment file."""

    name: str | None = None
    description: str = ""
    # Non-negative and leaving room for the per-trial offsets added to it: scikit-learn and
    # numpy refuse a negative seed deep inside the split.
    seed: int = Field(13, ge=0, le=2**31 - 1)
    dataset: DatasetConfig
    backend: BackendConfig
    # A search-space file, or the space itself (a `--set search_space.NAME=...` inlines the file).
    search_space: str | dict[str, Any]
    study: StudyConfig = StudyConfig()
    budget_usd: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("search_space", mode="before")
    @classmethod
    def _a_file_or_a_mapping(cls, value: Any) -> Any:
        """One message instead of one per member of the union."""
        if not isinstance(value, str | dict):
            raise ValueError(
                f"expected a search-space file or a mapping of parameter names to ranges, "
                f"got {value!r}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _share_system_prompt(cls, raw: Any) -> Any:
        """Backends that format chat prompts themselves get the dataset's system prompt."""
        if not isinstance(raw, dict) or not isinstance(raw.get("backend"), dict):
            return raw
        backend, dataset = raw["backend"], raw.get("dataset")
        prompt = dataset.get("system_prompt") if isinstance(dataset, dict) else None
        if not _takes_system_prompt(backend.get("kind")):
            return raw
        if prompt is None:  # the backend's alone: `harness prepare` writes the one it trains on
            own = backend.get("system_prompt")
            if own is None or not isinstance(dataset, dict):
                return raw
            return {**raw, "dataset": {**dataset, "system_prompt": own}}
        if backend.get("system_prompt") not in (None, prompt):
            raise ValueError("backend.system_prompt differs from dataset.system_prompt; set one")
        return {**raw, "backend": {**backend, "system_prompt": prompt}}


def _takes_system_prompt(kind: Any) -> bool:
    """Whether the backend section of this kind has a `system_prompt` setting."""
    entry = KINDS.get(kind) if isinstance(kind, str) else None
    return entry is not None and "system_prompt" in entry.config.model_fields


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: its config, the file it came from, and its resolved name."""

    config: ExperimentConfig
    path: Path
    raw: dict[str, Any]  # as validated: the file with the overrides applied
    overrides: tuple[str, ...] = ()  # the `--set KEY=VALUE` items, as given

    @property
    def name(self) -> str:
        return self.config.name or self.path.stem

    @property
    def study_name(self) -> str:
        return self.config.study.name or self.name

    @overload
    def resolve_path(self, value: str) -> Path: ...
    @overload
    def resolve_path(self, value: dict[str, Any]) -> dict[str, Any]: ...
    def resolve_path(self, value: str | dict[str, Any]) -> Path | dict[str, Any]:
        """Resolve a path named in the file: as given, then beside the file, then one level up.
        A mapping (a search space given inline) is already what a path would lead to."""
        return value if isinstance(value, dict) else resolve_beside(value, self.path)


def resolve_beside(value: str, path: Path) -> Path:
    """A path named in the file at `path`: as given, then beside it, then one level up."""
    candidate = Path(value).expanduser()
    if candidate.is_absolute():
        return candidate
    for base in (Path.cwd(), path.parent, path.parent.parent):
        if (base / candidate).exists():
            return base / candidate
    return candidate


def inline_search_space(raw: dict[str, Any], path: Path, overrides: list[str]) -> dict[str, Any]:
    """`raw` with its search-space file read into it when an override sets one of its
    parameters (`--set search_space.n_epochs=1`), so the override applies to a mapping.

    Raises:
        ConfigError: The search-space file cannot be read or is not a mapping.
    """
    touches = any(item.partition("=")[0].strip().startswith("search_space.") for item in overrides)
    if not touches or not isinstance(raw.get("search_space"), str):
        return raw
    file = resolve_beside(raw["search_space"], path)
    space = read_yaml(file)
    if not isinstance(space, dict):
        raise ConfigError(f"{file}: expected a mapping of parameter names to ranges")
    return {**raw, "search_space": space}


def find_experiment_file(name_or_path: str) -> Path:
    """Accept `experiments/demo.yaml`, `demo.yaml` or `demo` (looked up in `experiments/`)."""
    direct = Path(name_or_path).expanduser()
    if direct.is_file():
        return direct
    for candidate in (
        Path(EXPERIMENTS_DIR) / name_or_path,
        Path(EXPERIMENTS_DIR) / f"{name_or_path}.yaml",
    ):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in Path(EXPERIMENTS_DIR).glob("*.yaml"))
    hint = f" Known experiments: {', '.join(known)}." if known else ""
    raise ConfigError(f"{name_or_path}: no such experiment file.{hint}")


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """` (did you mean 'label_column'?)` for a misspelt key, else a hint to check the spelling."""
    model = _model_at([str(part) for part in loc[:-1]])
    known = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else " (check the spelling)"


def _model_at(parts: list[str]) -> type[BaseModel] | None:
    """The config model at a pydantic error location (the backend union by its kind tag)."""
    model: type[BaseModel] = ExperimentConfig
    members: dict[str, type[BaseModel]] = {name: entry.config for name, entry in KINDS.items()}
    while parts:
        part, parts = parts[0], parts[1:]
        if model is ExperimentConfig and part == "backend":
            member = members.get(parts[0]) if parts else None
            if member is None:
                return None
            model, parts = member, parts[1:]
            continue
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


# The tags pydantic puts in an error's location for the member of a plain union it tried
# (`lora_r.float`, `lora_r.int`): not keys of the file, and one problem, not one per member.
_MEMBER_TAGS = ("float", "int", "bool", "str")


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem, each naming the field path: `file: study.n_trials: ...`."""
    problems: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
        if len(parts) > 1 and parts[0] == "backend" and parts[1] in BACKEND_KINDS:
            del parts[1]  # the tag pydantic adds for the union member, not a key of the file
        if len(parts) > 1 and parts[-1] in _MEMBER_TAGS:
            tags = members.setdefault(".".join(parts[:-1]), [])
            tags.append(parts.pop())
            problems[".".join(parts)] = f"expected {' or '.join(tags)}, got {err['input']!r}"
            continue
        field, message = _problem(parts, err)
        problems.setdefault(field, message)
    return "\n".join(f"{source}: {field or '(top level)'}: {m}" for field, m in problems.items())


def _problem(parts: list[str], err: Any) -> tuple[str, str]:
    """The field path and the message for one pydantic error, in the file's terms."""
    field = ".".join(parts)
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key" + _did_you_mean(err["loc"])
    elif err["type"] == "missing":
        message = "required key is missing"
    elif err["type"] in ("model_type", "dict_type", "model_attributes_type"):
        model = _model_at(parts)
        keys = f" (keys: {', '.join(model.model_fields)})" if model is not None else ""
        message = f"expected a mapping{keys}, got {err['input']!r}"
    elif err["type"] in ("union_tag_not_found", "union_tag_invalid"):
        field, kind = f"{field}.kind", err["input"].get("kind") if err["input"] else None
        message = "required key is missing" if kind is None else f"unknown kind {kind!r}"
        message += f" (one of: {', '.join(BACKEND_KINDS)})"
    return field, message


def load_experiment(name_or_path: str, overrides: list[str] | None = None) -> Experiment:
    """Read, override and validate an experiment file. Raises ConfigError naming file and field."""
    path = find_experiment_file(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    raw = apply_overrides(inline_search_space(raw, path, overrides or []), overrides or [])
    source = f"{path} (with --set)" if overrides else str(path)
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
    return Experiment(config=config, path=path, raw=raw, overrides=tuple(overrides or ()))


def parse_backend_config(raw: Any, where: str) -> AnyBackendConfig:
    """A backend section from a dict (a stored model's config); ConfigError names `where`."""
    try:
        return TypeAdapter(BackendConfig).validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid backend settings: {exc}") from None

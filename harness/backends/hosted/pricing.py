"""The dated price table and the cost formulas (pure functions, no network).

Prices are US dollars per 1M tokens and live in `harness/backends/hosted/prices.yaml`, one row
per model with the source and date it was read from. `harness prices refresh` writes rows read
live from the providers to a local table beside it (`prices.local.yaml`, or the file named by
`HARNESS_PRICES_FILE`), whose rows replace the shipped ones; `backend.prices` in a config
overrides both.
A fine-tuned model (`ft:BASE:org:suffix:id`, checkpoints `...:ckpt-step-N`) is priced by its base
model's row at the fine-tuned inference rates; a dated alias (`gpt-4.1-nano`) finds its snapshot.

What a whole sweep may cost at most (`worst_case_total`) lives with the sweep, in
`harness.sweep.estimate`.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.backends.hosted.config import PriceOverride

PER_MILLION = 1_000_000
_PRICE_FIELDS = (
    "training_per_1m",
    "input_per_1m",
    "output_per_1m",
    "fine_tuned_input_per_1m",
    "fine_tuned_output_per_1m",
)
_AZURE_FT = ".ft-"  # Azure OpenAI names a fine-tuned model BASE.ft-<job id hex>
_OPTIONAL_FIELDS = ("hosting_per_hour", "provider")
# Snapshot suffixes: gpt-4.1-nano-2025-04-14, gpt-3.5-turbo-0125.
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$|-\d{4}$")


def base_model_of(model_id: str) -> str:
    """`ft:gpt-4.1-nano-2025-04-14:org:suffix:id[:ckpt-step-N]` -> `gpt-4.1-nano-2025-04-14`;
    Azure OpenAI's `gpt-4.1-nano-2025-04-14.ft-<id>` likewise."""
    if model_id.startswith("ft:"):
        return model_id.split(":")[1]
    return model_id.split(_AZURE_FT)[0]


def is_fine_tuned(model_id: str) -> bool:
    """True for fine-tuned models and their checkpoints (OpenAI names them `ft:...`, Azure
    `BASE.ft-<id>`)."""
    return model_id.startswith("ft:") or _AZURE_FT in model_id


@dataclass(frozen=True)
class Price:
    """One row of the price table: dollars per 1M tokens, and where the numbers came from."""

    model: str
    training_per_1m: float | None
    input_per_1m: float | None
    output_per_1m: float | None
    fine_tuned_input_per_1m: float | None
    fine_tuned_output_per_1m: float | None
    source: str
    as_of: str
    # Dollars per hour a deployed fine-tuned model costs while it exists (Azure OpenAI hosting),
    # whether or not it is called; None where the provider bills no hosting.
    hosting_per_hour: float | None = None
    provider: str = "openai"  # whose price list the row is from (`backend.provider` / kind)

    def training_usd(self, trained_tokens: int) -> float:
        """Dollars for `trained_tokens` (tokens in the training file x epochs)."""
        return trained_tokens * _need(self, "training_per_1m") / PER_MILLION

    def inference_usd(self, input_tokens: int, output_tokens: int, fine_tuned: bool) -> float:
        """Dollars for one or more requests' prompt and completion tokens."""
        prefix = "fine_tuned_" if fine_tuned else ""
        rate_in = _need(self, f"{prefix}input_per_1m")
        rate_out = _need(self, f"{prefix}output_per_1m")
        return (input_tokens * rate_in + output_tokens * rate_out) / PER_MILLION

    def hosting_usd(self, hours: float) -> float:
        """Dollars for keeping a fine-tuned model deployed `hours` (Azure OpenAI)."""
        return hours * _need(self, "hosting_per_hour")


def price_setting(model: str, field: str | None = None) -> str:
    """Where a model's price goes in a config, as `--set` reads it: `backend.prices.MODEL.FIELD`,
    a name holding a dot (`Meta-Llama-3.1-8B`, `gpt-4.1-nano`) in double quotes."""
    key = f'"{model}"' if "." in model else model
    return f"backend.prices.{key}" + (f".{field}" if field else "")


def _need(price: Price, name: str) -> float:
    value = getattr(price, name)
    if value is None:
        setting = price_setting(price.model, name)
        hourly = name == "hosting_per_hour" and UNLISTED_HARDWARE not in price.source
        refresh = " or run `harness prices refresh`," if hourly else ""
        raise ConfigError(
            f"no {name} price for {price.model} ({price.source}); set {setting} in the "
            f"experiment file,{refresh} or pass --set '{setting}=...'"
        )
    return float(value)


class PriceTable:
    """Prices by model snapshot, with lookups that understand fine-tuned ids and aliases."""

    def __init__(self, rows: Mapping[str, Price]) -> None:
        self.rows: dict[str, Price] = dict(rows)

    def lookup(self, model_id: str) -> Price:
        """The row pricing `model_id` (a snapshot, a dated alias, or a fine-tuned id).

        Raises:
            ConfigError: No row matches; the message says how to add one.
        """
        base = base_model_of(model_id)
        if base in self.rows:
            return self.rows[base]
        dated = sorted(m for m in self.rows if _SNAPSHOT.sub("", m) == base)
        if dated:
            return self.rows[dated[-1]]  # the newest snapshot of an alias
        raise ConfigError(
            f"no price for model {base!r} (known: {', '.join(sorted(self.rows))}); add it under "
            f"{price_setting(base)} with training_per_1m, fine_tuned_input_per_1m and "
            "fine_tuned_output_per_1m"
        )

    def with_overrides(self, overrides: Mapping[str, PriceOverride]) -> PriceTable:
        """A copy where each override replaces the given fields of its model's row."""
        rows = dict(self.rows)
        today = dt.date.today().isoformat()
        for model, override in overrides.items():
            given = {k: v for k, v in override.model_dump().items() if v is not None}
            given.setdefault("as_of", today)
            if model in rows:
                rows[model] = replace(rows[model], **given)
                continue
            missing = [f for f in ("training_per_1m", *_PRICE_FIELDS[3:]) if f not in given]
            if missing:
                needs = ", ".join(missing)
                raise ConfigError(f"{price_setting(model)}: a new model needs {needs}")
            values: dict[str, Any] = {f: given.get(f) for f in _PRICE_FIELDS}
            values |= {"hosting_per_hour": given.get("hosting_per_hour")}
            values |= {"source": given["source"], "as_of": given["as_of"]}
            rows[model] = Price(model, **values)
        return PriceTable(rows)


SHIPPED_TABLE = "backends/hosted/prices.yaml"  # inside the `harness` package
LOCAL_TABLE_VARIABLE = "HARNESS_PRICES_FILE"


def shipped_table_path() -> Path:
    """Where the shipped table lies (inside the installed package)."""
    return Path(str(resources.files("harness").joinpath(SHIPPED_TABLE)))


def local_table_path() -> Path:
    """The local table `harness prices refresh` writes: `$HARNESS_PRICES_FILE`, else
    `prices.local.yaml` beside the shipped table."""
    named = os.environ.get(LOCAL_TABLE_VARIABLE, "").strip()
    return Path(named) if named else shipped_table_path().with_name("prices.local.yaml")


def read_rows(path: Path) -> list[Price]:
    """Every row of a price table file (all providers).

    Raises:
        ConfigError: The file is not YAML, has no `rows:` list, or a row is malformed; the
            message names the file.
    """
    from harness.config import read_yaml  # deferred: harness.config imports the backends

    try:  # one line naming the file and line, a byte that is not UTF-8 too
        raw = read_yaml(path)
    except ConfigError as exc:
        raise ConfigError(f"cannot read the price table {exc}") from None
    rows = raw.get("rows") if isinstance(raw, dict) else None
    if not isinstance(rows, list):
        raise ConfigError(f"{path}: expected a `rows:` list")
    return [_price_row(row, str(path)) for row in rows]


def current_rows(path: Path | None = None) -> tuple[list[Price], Path | None]:
    """The shipped table's rows (or `path`'s) with the local table's rows in place of theirs,
    and the local table's path where one was read (None: the shipped table serves alone)."""
    rows = {(r.provider, r.model): r for r in read_rows(path or shipped_table_path())}
    local = local_table_path()
    if path is not None or not local.is_file():
        return list(rows.values()), None
    rows |= {(r.provider, r.model): r for r in read_rows(local)}
    return list(rows.values()), local


def hardware_rates() -> dict[str, tuple[float, str, str]]:
    """Together hardware id -> (dollars an hour, source, as_of), from the local table's
    `hardware:` list (`harness prices refresh`); empty when there is none.

    Raises:
        ConfigError: The local table is malformed; the message names the file and entry.
    """
    path = local_table_path()
    if not path.is_file():
        return {}
    read_rows(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    rates: dict[str, tuple[float, str, str]] = {}
    for entry in (raw.get("hardware") or []) if isinstance(raw, dict) else []:
        rate: Any = entry.get("hosting_per_hour") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or "hardware" not in entry:
            raise ConfigError(
                f"{path}: hardware: every entry needs hardware and hosting_per_hour (0 or more); "
                f"got {entry!r}"
            )
        if not _is_rate(rate):
            raise ConfigError(
                f"{path}: hardware {entry['hardware']}: hosting_per_hour must be a number, 0 or "
                f"more, got {rate!r}"
            )
        rates[str(entry["hardware"])] = (
            float(rate),
            str(entry.get("source")),
            str(entry.get("as_of")),
        )
    return rates


UNLISTED_HARDWARE = "the refreshed Together hardware list has no"


def with_hardware_rate(prices: PriceTable, hardware: str | None) -> PriceTable:
    """The rows that name no hourly rate with the one `harness prices refresh` read for a
    Together dedicated endpoint on `hardware`; the table as it is without one."""
    rates = hardware_rates() if hardware else {}
    rate = rates.get(hardware) if hardware else None
    if rate is None:
        if not rates:
            return prices
        # Refreshed, but not this id: a refresh again would not price it; the id is wrong.
        note = (
            f"; hosting: {UNLISTED_HARDWARE} {hardware} (it lists {', '.join(sorted(rates))}): "
            "check backend.serving.hardware"
        )
        rows = {
            m: r if r.hosting_per_hour is not None else replace(r, source=r.source + note)
            for m, r in prices.rows.items()
        }
        return PriceTable(rows)
    hourly, source, as_of = rate
    rows = {
        model: replace(
            row,
            hosting_per_hour=hourly,
            source=f"{row.source}; hosting: {source} ({hardware}, as of {as_of})",
        )
        if row.hosting_per_hour is None
        else row
        for model, row in prices.rows.items()
    }
    return PriceTable(rows)


def load_price_table(
    path: Path | None = None,
    overrides: Mapping[str, PriceOverride] | None = None,
    provider: str = "openai",
    hardware: str | None = None,
) -> PriceTable:
    """Read the shipped table (or `path`), keep `provider`'s rows, apply an experiment's overrides.

    The local table written by `harness prices refresh` (see `local_table_path`) replaces the
    shipped rows it has, unless `path` is given. `hardware` (a Together dedicated endpoint's
    hardware id) gives every row that names no hourly rate the hardware's refreshed one.

    Raises:
        ConfigError: A file is malformed or a row lacks a field, source or date.
    """
    parsed, _ = current_rows(path)
    table = PriceTable({row.model: row for row in parsed if row.provider == provider})
    table = table.with_overrides(overrides or {})
    return with_hardware_rate(table, hardware)


# Whose price lists a row may be from: `backend.provider` of `kind: openai`, and `kind: together`.
PROVIDERS = ("azure", "nebius", "openai", "together")


def _price_row(row: Any, where: str) -> Price:
    names = [f.name for f in fields(Price)]
    required = [name for name in names if name not in _OPTIONAL_FIELDS]
    if not isinstance(row, dict) or "model" not in row:
        raise ConfigError(
            f"{where}: every row needs {', '.join(required)} (optionally "
            f"{', '.join(_OPTIONAL_FIELDS)}); got {row!r}"
        )
    model = row["model"]
    unknown = sorted(set(row) - set(names))
    if unknown:
        raise ConfigError(
            f"{where}: {model}: unknown field {', '.join(unknown)} (a row takes {', '.join(names)})"
        )
    missing = [name for name in required if name not in row]
    if missing:
        raise ConfigError(
            f"{where}: {model}: missing {', '.join(missing)} (null where no figure is known)"
        )
    provider = row.get("provider", "openai")
    if provider not in PROVIDERS:
        # A mistyped provider's row would price nothing, and the row it meant to replace serve.
        raise ConfigError(
            f"{where}: {model}: provider {provider!r} is not one of {', '.join(PROVIDERS)}"
        )
    if not str(row["source"]).strip() or not str(row["as_of"]).strip():
        raise ConfigError(f"{where}: {model}: source and as_of must not be empty")
    _check_as_of(row["as_of"], f"{where}: {model}")
    for name in (*_PRICE_FIELDS, "hosting_per_hour"):
        value = row.get(name)
        if value is not None and not _is_rate(value):
            raise ConfigError(
                f"{where}: {model}: {name} must be a number, 0 or more, got {value!r}"
            )
    return Price(**{**row, "as_of": str(row["as_of"])})


def _check_as_of(as_of: Any, where: str) -> None:
    """A table row's date must be one the age check reads, and not to come: else its age (and
    the warning past 180 days) is never said."""
    try:  # YAML reads an unquoted 2026-01-01 as a date already
        day = as_of if isinstance(as_of, dt.date) else dt.date.fromisoformat(str(as_of))
        day = day.date() if isinstance(day, dt.datetime) else day
    except ValueError:
        raise ConfigError(f"{where}: as_of must be a date (YYYY-MM-DD), got {as_of!r}") from None
    if day > dt.date.today() + dt.timedelta(days=1):  # a day's leeway for time zones
        raise ConfigError(f"{where}: as_of {day} is in the future (today is {dt.date.today()})")


def _is_rate(value: Any) -> bool:
    """A finite number >= 0: a negative or NaN rate would shrink or void every reservation."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0


def require_prices(price: Price, hosted: bool = False) -> None:
    """Raise ConfigError, naming the field to set, when a price a trial needs is missing (a
    shipped row whose figure could not be read): before anything is spent."""
    price.training_usd(0)
    price.inference_usd(0, 0, fine_tuned=True)
    if hosted:
        price.hosting_usd(0)

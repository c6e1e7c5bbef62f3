"""Prices read live from the providers' own APIs, for `harness prices refresh`.

Each reader follows the response shape its API documents (the test fakes answer in the same
shapes, unit traps included):

- Azure Retail Prices API, `GET https://prices.azure.com/api/retail/prices?$filter=...`, public,
  no key: `{"Items": [{"retailPrice", "unitOfMeasure", "meterName", "productName", "skuName",
  "armRegionName", "effectiveStartDate", ...}], "NextPageLink": url or null}`. Most token meters
  are priced per `1K` tokens, some per `1M`; hosting per `1 Hour`; meter names are inconsistent
  (`gpt 4.1 nano`, `gpt-4.1-nano`, `GPT41 nano`), so names are compared with spaces, dots and
  dashes removed, the longest model name first.
- Nebius Token Factory models API, `GET {api}/v0/models` with `Authorization: Bearer
  $NEBIUS_API_KEY`: `{"data": [{"id", "fine_tune": {"training_price_per_million_tokens"},
  "flavours": [{"name", "pricing": {"input_price_per_million_tokens",
  "output_price_per_million_tokens"}}]}]}`. The inference part's field names could not be
  checked against a live answer: a model whose figures are missing keeps its shipped nulls.
- Together hardware list, `GET {api}/v1/hardware` with `Authorization: Bearer $TOGETHER_API_KEY`:
  `{"data": [{"id", "pricing": {"cents_per_minute"}, ...}]}`: what a dedicated endpoint on that
  hardware bills per minute.

Nothing here writes a key anywhere: keys are read from the environment and sent as a header.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from harness.backends.hosted.pricing import (
    LOCAL_TABLE_VARIABLE,
    Price,
    PriceTable,
    hardware_rates,
    local_table_path,
    price_setting,
    read_rows,
    shipped_table_path,
)
from harness.errors import BackendError, ConfigError

AZURE_URL = "https://prices.azure.com/api/retail/prices"
AZURE_URL_VARIABLE = "AZURE_RETAIL_PRICES_URL"
NEBIUS_API = "https://api.tokenfactory.nebius.com"
TOGETHER_API = "https://api.together.xyz"
_TIMEOUT = 30.0
_MAX_PAGES = 50  # the Retail Prices API pages 100 items at a time; a filtered query needs few
_UNITS = {"1k": 1_000.0, "1m": 1.0, "1 m": 1.0, "1k tokens": 1_000.0, "1m tokens": 1.0}
# Meters that are not the plain per-token or hosting price of a fine-tuned model.
_AZURE_SKIP = ("cached", "cchd", "batch", "realtime", "audio", " aud ", "provisioned", "ptu")


@dataclass(frozen=True)
class HardwareRate:
    """What a Together dedicated endpoint on `hardware` bills per hour, read on `as_of`."""

    hardware: str
    hosting_per_hour: float
    source: str
    as_of: str


@dataclass
class Refreshed:
    """What one provider's API gave: rows replacing shipped ones, hardware rates, and notes."""

    provider: str
    rows: list[Price]
    hardware: list[HardwareRate]
    notes: list[str]


def get_data_list(url: str, key: str | None = None) -> list[Any]:
    """GET `url` and return its body's `data` list (the shape of every listing read here).

    Raises:
        BackendError: As `get_json`, or the body holds no `data` list.
    """
    body = get_json(url, key)
    entries = body.get("data") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise BackendError(f"{url}: expected a `data` list")
    return entries


def get_json(url: str, key: str | None = None) -> Any:
    """GET `url` and parse its JSON body.

    Raises:
        BackendError: The server cannot be reached, refuses, or answers something not JSON.
    """
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, headers=headers)
    where = urllib.parse.urlsplit(url)._replace(query="").geturl()
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise BackendError(f"{where} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise BackendError(f"cannot reach {where}: {exc}") from None
    except ValueError:
        raise BackendError(f"{where} answered something that is not JSON") from None


# --- Azure ---------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _family(model: str) -> str:
    """`gpt-4.1-nano-2025-04-14` -> `gpt41nano`: how meter names spell a model, squashed."""
    return _squash(re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model))


def azure_url() -> str:
    """Where the Retail Prices API is read: `AZURE_RETAIL_PRICES_URL`, else Azure's own."""
    return os.environ.get(AZURE_URL_VARIABLE, "").strip() or AZURE_URL


def azure_items(region: str) -> list[dict[str, Any]]:
    """Every Retail Prices item for Azure OpenAI in `region`, following NextPageLink."""
    base = azure_url()
    query = f"armRegionName eq '{region}' and contains(productName, 'OpenAI')"
    url: str | None = f"{base}?{urllib.parse.urlencode({'$filter': query})}"
    items: list[dict[str, Any]] = []
    for _ in range(_MAX_PAGES):
        if not url:
            break
        page = get_json(url)
        if not isinstance(page, dict) or not isinstance(page.get("Items"), list):
            raise BackendError(f"{base}: expected an `Items` list")
        items.extend(item for item in page["Items"] if isinstance(item, dict))
        url = page.get("NextPageLink") or None
    return items


def _azure_fields(item: dict[str, Any]) -> list[tuple[str, float]]:
    """Which price fields a meter gives, per 1M tokens or per hour; none for other meters.

    Training: every tier but Developer, the dearest kept by the caller (a job names no training
    tier, so the worst case is priced). Inference: the Global rate (what Developer deployments
    bill); a base model's meter prices its fine-tuned models too, unless a fine-tuned meter
    exists (Azure bills fine-tuned inference at the base model's rate)."""
    name = f" {item.get('meterName', '')} {item.get('skuName', '')} ".lower()
    unit = str(item.get("unitOfMeasure", "")).strip().lower()
    price = _number(item.get("retailPrice"))
    if price is None or isinstance(item.get("retailPrice"), str):
        return []
    if any(word in name for word in _AZURE_SKIP):
        return []
    if unit in ("1 hour", "1/hour", "1 hours"):
        return [("hosting_per_hour", float(price))] if "host" in name else []
    per = _UNITS.get(unit)
    if per is None:
        return []  # training billed per hour (older models) and other units: not token rates
    rate = round(price * per, 9)  # dollars per 1M tokens, without the product's float noise
    if "trng" in name or "training" in name:  # any tier but Developer: the dearest is kept
        return [] if " dev" in name else [("training_per_1m", rate)]
    if "glbl" not in name and "global" not in name:
        return []  # Regional, Data Zone and Developer inference meters
    output, input_ = "outp" in name or "output" in name, "inp" in name or "input" in name
    if not (output or input_):
        return []
    side = "output" if output else "input"
    tuned = "ft" in name.split() or "fine" in name or "ftuned" in name
    return [(f"fine_tuned_{side}_per_1m" if tuned else f"{side}_per_1m", rate)]


def azure_rows(items: Iterable[dict[str, Any]], shipped: list[Price], region: str) -> Refreshed:
    """The shipped Azure rows with every figure a meter gives replaced, dated today."""
    today = date.today().isoformat()
    families = sorted(((_family(p.model), p) for p in shipped), key=lambda f: -len(f[0]))
    found: dict[str, dict[str, tuple[float, str]]] = {}
    for item in items:
        meter = _squash(f"{item.get('meterName', '')}")
        match = next((p.model for family, p in families if family and family in meter), "")
        since = str(item.get("effectiveStartDate", ""))[:10]
        for name, rate in _azure_fields(item) if match else []:
            read = found.setdefault(match, {})
            if name != "training_per_1m" or rate > read.get(name, (0.0, ""))[0]:
                read[name] = (rate, since)
    for read in found.values():  # fine-tuned inference at the base model's rate
        for side in ("input", "output"):
            if f"{side}_per_1m" in read:
                read.setdefault(f"fine_tuned_{side}_per_1m", read[f"{side}_per_1m"])
    rows, notes = [], []
    for price in shipped:
        fields = found.get(price.model)
        if not fields:
            notes.append(f"azure: no meter for {price.model} in {region}: the shipped row stays")
            continue
        values: dict[str, Any] = {name: rate for name, (rate, _) in fields.items()}
        effective = sorted({since for _, since in fields.values() if since})
        source = (
            f"Azure Retail Prices API ({azure_url()}), {region}, read {today}: "
            f"{', '.join(sorted(values))} (meters effective {', '.join(effective) or 'undated'}); "
            f"other figures from the shipped row ({price.source}, as of {price.as_of})"
        )
        rows.append(replace(price, **values, source=source, as_of=today))
    return Refreshed("azure", rows, [], notes)


# --- Nebius --------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A price figure from an answer; None for anything but a finite number >= 0 (a negative
    or NaN rate would shrink or void every reservation priced with it)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def nebius_price(entry: dict[str, Any], api: str) -> Price | None:
    """A price row from one `GET /v0/models` entry; None where it prices no training."""
    tune = entry.get("fine_tune") if isinstance(entry.get("fine_tune"), dict) else {}
    training = _number((tune or {}).get("training_price_per_million_tokens"))
    if not training:
        return None
    rates: dict[str, float | None] = {"input": None, "output": None}
    flavours = entry.get("flavours") if isinstance(entry.get("flavours"), list) else []
    for flavour in flavours or []:
        pricing = flavour.get("pricing") if isinstance(flavour, dict) else None
        if isinstance(pricing, dict) and flavour.get("name") in (None, "base"):
            for side in rates:
                rates[side] = _number(pricing.get(f"{side}_price_per_million_tokens"))
            break
    today = date.today().isoformat()
    return Price(
        model=str(entry["id"]),
        training_per_1m=training,
        input_per_1m=rates["input"],
        output_per_1m=rates["output"],
        fine_tuned_input_per_1m=rates["input"],
        fine_tuned_output_per_1m=rates["output"],
        source=f"Nebius models API ({api}/v0/models), read {today}: fine_tune and base flavour",
        as_of=today,
        provider="nebius",
    )


def nebius_api() -> str:
    """Nebius's API root: `NEBIUS_BASE_URL` without its `/v1/`, else Token Factory's."""
    named = os.environ.get("NEBIUS_BASE_URL", "").strip().rstrip("/")
    return re.sub(r"/v1$", "", named) if named else NEBIUS_API


def nebius_rows(key: str) -> Refreshed:
    api = nebius_api()
    entries = get_data_list(f"{api}/v0/models", key)
    rows = [
        row
        for entry in entries
        if isinstance(entry, dict) and "id" in entry
        for row in [nebius_price(entry, api)]
        if row is not None
    ]
    notes = [] if rows else ["nebius: no model with a training price"]
    return Refreshed("nebius", rows, [], notes)


def price_nebius(prices: PriceTable, base_url: str | None, models: Sequence[str], key: str) -> None:
    """Put each model's row from Nebius's models API into `prices` (kept where the API gives
    no inference figure), before anything is spent.

    Raises:
        ConfigError: The API lists no such model, or its training price is missing or zero;
            the message names the field to set instead.
        BackendError: The API cannot be reached or answers something else.
    """
    if not models:
        return
    api = re.sub(r"/v1$", "", (base_url or f"{NEBIUS_API}/v1").rstrip("/"))
    entries = get_data_list(f"{api}/v0/models", key)
    by_id = {str(e.get("id")): e for e in entries if isinstance(e, dict)}
    for model in models:
        entry = by_id.get(model)
        if entry is None:  # not served there: a price set for it would only see jobs refused
            raise ConfigError(_unlisted(api, model, by_id))
        row = nebius_price(entry, api)
        if row is None:
            raise ConfigError(
                f"Nebius's models API ({api}/v0/models) gives no (or a zero) price for {model}: "
                "fine_tune.training_price_per_million_tokens; set "
                f"{price_setting(model, 'training_per_1m')} (with fine_tuned_input_per_1m and "
                "fine_tuned_output_per_1m) from your rate card"
            )
        old = prices.rows.get(model)
        keep = {
            name: getattr(old, name)
            for name in ("fine_tuned_input_per_1m", "fine_tuned_output_per_1m")
            if old is not None and getattr(row, name) is None
        }
        prices.rows[model] = replace(row, **keep)


def _unlisted(api: str, model: str, by_id: Mapping[str, dict[str, Any]]) -> str:
    """A model Nebius does not list: what it lists that can be fine-tuned, and what to fix."""
    tunable = sorted(m for m, e in by_id.items() if nebius_price(e, api) is not None)
    shown = ", ".join(tunable[:12]) + (" and more" if len(tunable) > 12 else "")
    return (
        f"Nebius's models API ({api}/v0/models) does not list {model}, so Nebius cannot fine-tune "
        f"it; it lists for fine-tuning: {shown or 'none'}. Check backend.model (and "
        "NEBIUS_BASE_URL or backend.base_url, which name the endpoint asked)"
    )


# --- Together ------------------------------------------------------------------------------


def together_api() -> str:
    named = os.environ.get("TOGETHER_BASE_URL", "").strip().rstrip("/")
    return re.sub(r"/v1$", "", named) if named else TOGETHER_API


def together_hardware(key: str) -> Refreshed:
    """Hourly rates of Together's dedicated-endpoint hardware (cents per minute x 60 / 100)."""
    api = together_api()
    entries = get_data_list(f"{api}/v1/hardware", key)
    today = date.today().isoformat()
    rates = []
    for entry in entries:
        pricing = entry.get("pricing") if isinstance(entry, dict) else None
        cents = _number(pricing.get("cents_per_minute")) if isinstance(pricing, dict) else None
        if cents is None or "id" not in entry:
            continue
        source = f"Together hardware list ({api}/v1/hardware), read {today}: {cents} cents/minute"
        rates.append(HardwareRate(str(entry["id"]), cents * 60 / 100, source, today))
    notes = [] if rates else ["together: the hardware list priced nothing"]
    return Refreshed("together", [], rates, notes)


# --- the local table -----------------------------------------------------------------------


def refresh(providers: Iterable[str], region: str) -> tuple[list[Refreshed], list[str]]:
    """Read every named provider's API; what failed or was skipped comes back as a line each
    (never a key)."""
    shipped = read_rows(shipped_table_path())  # not an earlier refresh's rows: sources stay short
    done: list[Refreshed] = []
    failed: list[str] = []
    for provider in providers:
        key_variable = {"nebius": "NEBIUS_API_KEY", "together": "TOGETHER_API_KEY"}.get(provider)
        key = os.environ.get(key_variable, "").strip() if key_variable else ""
        if key_variable and not key:
            failed.append(f"{provider}: {key_variable} is not set; skipped")
            continue
        try:
            if provider == "azure":
                rows = [p for p in shipped if p.provider == "azure"]
                done.append(azure_rows(azure_items(region), rows, region))
            elif provider == "nebius":
                done.append(nebius_rows(key))
            else:
                done.append(together_hardware(key))
        except BackendError as exc:
            failed.append(f"{provider}: {exc}")
    return done, failed


def write_local_table(done: list[Refreshed]) -> Path:
    """Merge what was read into the local table (rows by provider and model, hardware by id),
    keeping what earlier refreshes wrote for others; returns its path."""
    path = local_table_path()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    hardware: dict[str, dict[str, Any]] = {}
    if path.is_file():
        old = _load_local(path)
        rows = {(r["provider"], r["model"]): r for r in old.get("rows") or []}
        hardware = {h["hardware"]: h for h in old.get("hardware") or []}
    for result in done:
        rows |= {(r.provider, r.model): asdict(r) for r in result.rows}
        hardware |= {h.hardware: asdict(h) for h in result.hardware}
    tables = {"rows": list(rows.values()), "hardware": list(hardware.values())}
    text = yaml.safe_dump(tables, sort_keys=False)
    header = (
        "# Prices read live by `harness prices refresh` on the dates in `as_of`; its rows\n"
        "# replace the shipped table's (harness/backends/hosted/prices.yaml). Delete this file\n"
        "# to go back to the shipped table.\n"
    )
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:  # whole or not at all: a torn table would stop every command that prices
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(header + text, encoding="utf-8")
        os.replace(part, path)
    except OSError as exc:
        if part.exists():  # False where the folder is not one
            part.unlink()
        raise ConfigError(
            f"cannot write the local price table {path}: {exc.strerror or exc}; set "
            f"{LOCAL_TABLE_VARIABLE} to a file you can write"
        ) from None
    return path


def _load_local(path: Path) -> dict[str, Any]:
    read_rows(path)  # a malformed table is said, naming the file, before it is merged
    hardware_rates()
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return raw if isinstance(raw, dict) else {}

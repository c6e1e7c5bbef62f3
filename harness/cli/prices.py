"""`harness prices` (the price table with sources and ages) and `harness prices refresh`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.common import HarnessGroup, app, console, err_console, user_errors

prices_app = typer.Typer(
    cls=HarnessGroup,
    help="The dated price table: sources and ages; `refresh` reads the providers' APIs.",
    invoke_without_command=True,
)
app.add_typer(prices_app, name="prices")

PROVIDERS = ("azure", "nebius", "together")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@prices_app.callback()
@user_errors
def prices(
    ctx: typer.Context,
    provider: Annotated[
        str | None, typer.Option(help="Only this provider's rows (openai, azure, ...).")
    ] = None,
) -> None:
    """List every hosted price row: rates per 1M tokens, hosting per hour, source and age."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from harness.backends.hosted.pricing import current_rows, hardware_rates
    from harness.sweep.estimate import STALE_AFTER_DAYS, age_days

    rows, local = current_rows()
    hardware = sorted(hardware_rates().items())  # a malformed entry fails before any listing
    known = sorted({row.provider for row in rows})
    if provider is not None and provider not in known:
        from harness.errors import ConfigError

        raise ConfigError(f"--provider {provider}: no rows; the table has {', '.join(known)}")
    table = Table(title="Hosted prices, US dollars per 1M tokens (hosting per hour)")
    headers = ["provider", "model", "train", "ft in", "ft out", "host/h", "as of", "age"]
    for name in [*headers, "source"]:
        table.add_column(name, overflow="fold")
    for row in sorted(rows, key=lambda r: (r.provider, r.model)):
        if provider is not None and row.provider != provider:
            continue
        days = age_days(row.as_of)
        age = "?" if days is None else f"{days} d" + (" (old)" if days > STALE_AFTER_DAYS else "")
        rates = (row.training_per_1m, row.fine_tuned_input_per_1m, row.fine_tuned_output_per_1m)
        cells = [row.provider, row.model, *map(_rate, rates), _rate(row.hosting_per_hour)]
        table.add_row(*cells, row.as_of, age, row.source)
    console.print(table)
    for name, (hourly, source, as_of) in hardware:
        line = f"together hardware {name}: ${hourly:g} an hour ({source}, as of {as_of})"
        console.print(line, markup=False, highlight=False)
    console.print(_whence(local), markup=False)


def _whence(local: Path | None) -> str:
    """Which table serves: the shipped one alone, or the local one's rows (or hardware only)."""
    from harness.backends.hosted.pricing import read_rows, shipped_table_path

    if local is None:
        where = f"Shipped table only ({shipped_table_path()}): no live prices read"
        return f"{where}; `harness prices refresh` reads them."
    if read_rows(local):
        return f"Live rows from {local} replace the shipped ones."
    # `refresh --only together` writes hardware rates only
    return f"Hardware rates from {local}; it has no model rows: the shipped rows serve."


@prices_app.command("refresh")
@user_errors
def refresh(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="azure, nebius or together (repeatable).")
    ] = None,
    region: Annotated[str, typer.Option(help="Azure region of the Retail Prices.")] = "eastus2",
) -> None:
    """Read live prices (Azure Retail Prices API, Nebius models API with NEBIUS_API_KEY,
    Together's hardware list with TOGETHER_API_KEY) into the local table beside the shipped one.
    """
    from harness.backends.hosted.live_prices import refresh as read_live
    from harness.backends.hosted.live_prices import write_local_table
    from harness.errors import ConfigError

    unknown = sorted(set(only or ()) - set(PROVIDERS))
    if unknown:
        raise ConfigError(f"--only {', '.join(unknown)}: choose from {', '.join(PROVIDERS)}")
    done, failed = read_live(only or PROVIDERS, region)
    for line in failed:
        err_console.print(f"not refreshed: {line}", markup=False, highlight=False)
    if not any(result.rows or result.hardware for result in done):
        err_console.print("Nothing was read: the shipped table (and any earlier refresh) serves.")
        raise typer.Exit(1)
    path = write_local_table(done)
    for result in done:
        for note in result.notes:
            console.print(note, markup=False, highlight=False)
        for row in result.rows:
            console.print(f"{row.provider} {row.model}: {row.source}", markup=False)
        if result.hardware:
            console.print(f"together: {len(result.hardware)} hardware rates", markup=False)
    console.print(f"Wrote {path}; `harness prices` lists the table.", markup=False)

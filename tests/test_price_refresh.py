"""`harness prices` and `harness prices refresh` against fakes of the three price APIs."""

from __future__ import annotations

import socket
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from harness.backends.hosted.pricing import hardware_rates, load_price_table
from tests.cli_runner import assert_clean_error, run_cli
from tests.prices_fake import KEY, PriceServer

NANO = "gpt-4.1-nano-2025-04-14"


def _env(server: PriceServer) -> dict[str, str | None]:
    return {
        "AZURE_RETAIL_PRICES_URL": f"{server.url}/api/retail/prices",
        "NEBIUS_BASE_URL": f"{server.url}/v1/",
        "TOGETHER_BASE_URL": f"{server.url}/v1",
        "NEBIUS_API_KEY": KEY,
        "TOGETHER_API_KEY": KEY,
    }


def test_refresh_reads_all_three_apis_into_a_dated_local_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PriceServer() as server:
        result = run_cli("prices", "refresh", env=_env(server))
    assert result.exit_code == 0, result.stderr
    local = tmp_path / "prices.local.yaml"
    assert local.is_file() and KEY not in local.read_text()
    today = date.today().isoformat()

    nano = load_price_table(provider="azure").lookup(NANO)
    assert nano.training_per_1m == pytest.approx(1.65)  # per 1K; the dearer Regional meter
    assert nano.fine_tuned_input_per_1m == pytest.approx(0.10)  # already per 1M
    assert nano.fine_tuned_output_per_1m == pytest.approx(0.40)  # not the cached rate
    assert nano.hosting_per_hour == pytest.approx(1.70)  # per hour, never scaled
    assert nano.as_of == today and "Azure Retail Prices API" in nano.source
    # The source names where the rates were read, not Azure's address when they were not.
    assert f"({server.url}/api/retail/prices)" in nano.source
    assert "2025-05-01" in nano.source and "2025-06-01" in nano.source
    mini = load_price_table(provider="azure").lookup("gpt-4.1-mini-2025-04-14")
    assert mini.training_per_1m == pytest.approx(5.0)
    assert mini.input_per_1m == mini.fine_tuned_input_per_1m == pytest.approx(0.42)
    assert mini.fine_tuned_output_per_1m == 1.60  # no meter read: the shipped figure stays

    llama = load_price_table(provider="nebius").lookup("meta-llama/Meta-Llama-3.1-8B-Instruct")
    assert (llama.training_per_1m, llama.fine_tuned_input_per_1m) == (0.4, 0.02)
    assert llama.fine_tuned_output_per_1m == 0.06 and llama.as_of == today
    assert hardware_rates()["1x_nvidia_h100_80gb_sxm"][0] == pytest.approx(3.30)  # 5.5 c/min

    # The shipped Nebius experiment, unpriceable offline, is now estimated from the live row.
    from tests.conftest import ROOT

    nebius = run_cli("estimate", str(ROOT / "experiments" / "nebius_llama8b.yaml"))
    assert nebius.exit_code == 0, nebius.stderr
    assert "Nebius models API" in " ".join(nebius.stdout.split())

    listing = run_cli("prices")
    assert listing.exit_code == 0 and "Live rows from" in listing.stdout
    assert "1x_nvidia_h100_80gb_sxm: $3.3 an hour" in " ".join(listing.stdout.split())


def test_offline_the_shipped_table_serves_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env: dict[str, str | None] = {
        "AZURE_RETAIL_PRICES_URL": f"http://127.0.0.1:{port}/api/retail/prices",
        "NEBIUS_API_KEY": None,
        "TOGETHER_API_KEY": None,
    }
    result = run_cli("prices", "refresh", env=env)
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "azure: cannot reach" in err and "NEBIUS_API_KEY is not set" in err
    assert "the shipped table" in err and "Traceback" not in result.output
    assert not (tmp_path / "prices.local.yaml").exists()
    listing = run_cli("prices", "--provider", "together")
    assert listing.exit_code == 0 and "Shipped table only" in listing.stdout
    assert "issue #24" in " ".join(listing.stdout.split())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rows: {not: a list}", "expected a `rows:` list"),
        ("rows:\n  - {model: x}\n", "x: missing training_per_1m"),
        ("rows:\n  - [x]\n", "every row needs model"),
        ("rows: [\n", "cannot read the price table"),
    ],
)
def test_a_malformed_local_table_is_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "prices.local.yaml").write_text(text)
    assert_clean_error(run_cli("prices"), "prices.local.yaml", needle)


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"rows: [\n", "prices.local.yaml:2:1: invalid YAML"), (b"\xff\xfe", "not UTF-8 text")],
)
def test_an_unreadable_local_table_is_one_line_naming_where(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    # Was PyYAML's five-line message, and a UnicodeDecodeError traceback for a byte not UTF-8.
    (tmp_path / "prices.local.yaml").write_bytes(content)
    result = run_cli("prices")
    assert_clean_error(result, "cannot read the price table", needle)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_wrong_rate_in_the_local_table_names_the_field(tmp_path: Path) -> None:
    row = (
        "rows:\n  - {model: m, provider: azure, training_per_1m: cheap, input_per_1m: null,"
        " output_per_1m: null, fine_tuned_input_per_1m: null, fine_tuned_output_per_1m: null,"
        " source: s, as_of: '2026-01-01'}\n"
    )
    (tmp_path / "prices.local.yaml").write_text(row)
    assert_clean_error(run_cli("prices"), "prices.local.yaml", "training_per_1m must be a number")


def _row(**change: object) -> str:
    fields = {
        "model": "m",
        "provider": "together",
        "training_per_1m": 1,
        "input_per_1m": None,
        "output_per_1m": None,
        "fine_tuned_input_per_1m": 1,
        "fine_tuned_output_per_1m": 1,
        "source": "s",
        "as_of": "2026-01-01",
    }
    fields.update(change)
    cells = ", ".join(f"{k}: {'null' if v is None else repr(v)}" for k, v in fields.items())
    return "rows:\n  - {" + cells.replace("'", '"') + "}\n"


@pytest.mark.parametrize(
    ("row", "needles"),
    [
        # A mistyped provider was accepted: its row priced nothing and `harness prices`
        # listed it (exit 0), while the sweep used the shipped row it meant to replace.
        (_row(provider="togethr"), ("m: provider 'togethr'", "azure, nebius, openai, together")),
        # A date the age check cannot read (age "?", no "check the source") or one to come
        # ("-1120 d") passed, and with it a stale row was never said to be stale.
        (_row(as_of="yesterday"), ("m: as_of must be a date (YYYY-MM-DD)", "'yesterday'")),
        (_row(as_of="2999-01-01"), ("m: as_of 2999-01-01 is in the future",)),
        # A mistyped field: the message dumped the row; it now names the field.
        (_row(inptu_per_1m=1), ("m: unknown field inptu_per_1m", "input_per_1m")),
    ],
)
def test_a_bad_row_in_the_local_table_names_the_field_and_what_it_takes(
    tmp_path: Path, row: str, needles: tuple[str, ...]
) -> None:
    (tmp_path / "prices.local.yaml").write_text(row)
    result = run_cli("prices")
    assert_clean_error(result, "prices.local.yaml", *needles)
    assert result.stdout == "", result.stdout


def test_a_bad_hardware_entry_is_refused_before_any_row_is_listed(tmp_path: Path) -> None:
    # The rows' table was printed, then the error came (exit 2): half a listing.
    table = "rows: []\nhardware:\n  - {hardware: 1x_h100, hosting_per_hour: abc}\n"
    (tmp_path / "prices.local.yaml").write_text(table)
    result = run_cli("prices")
    assert_clean_error(result, "prices.local.yaml", "hardware 1x_h100", "'abc'")
    assert result.stdout == "", result.stdout


def test_an_unknown_provider_is_refused_naming_the_known_ones() -> None:
    assert_clean_error(run_cli("prices", "refresh", "--only", "aws"), "--only aws")
    assert_clean_error(run_cli("prices", "--provider", "aws"), "--provider aws", "azure, nebius")


def test_dedicated_together_serving_takes_the_refreshed_hardware_rate() -> None:
    from harness.backends import load_backend
    from harness.backends.together.config import TogetherBackendConfig

    model = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
    serving = {"kind": "dedicated", "hardware": "1x_nvidia_h100_80gb_sxm", "max_minutes": 30}
    config = TogetherBackendConfig(kind="together", model=model, serving=serving)
    assert load_backend(config).price_rows([model])[0].hosting_per_hour is None  # not yet read
    with PriceServer() as server:
        env = _env(server)
        assert run_cli("prices", "refresh", "--only", "together", env=env).exit_code == 0
    row = load_backend(config).price_rows([model])[0]
    assert row.hosting_per_hour == pytest.approx(3.30)
    assert "Together hardware list" in row.source and "issue #24" in row.source


def test_an_unwritable_local_table_is_one_clear_error(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with PriceServer() as server:
        env = {**_env(server), "HARNESS_PRICES_FILE": str(blocked / "prices.local.yaml")}
        result = run_cli("prices", "refresh", "--only", "together", env=env)
    assert_clean_error(result, "cannot write the local price table", "HARNESS_PRICES_FILE")


def test_a_second_refresh_merges_and_does_not_nest_sources() -> None:
    with PriceServer() as server:
        env = _env(server)
        assert run_cli("prices", "refresh", "--only", "azure", env=env).exit_code == 0
        first = load_price_table(provider="azure").lookup(NANO).source
        assert run_cli("prices", "refresh", "--only", "azure", env=env).exit_code == 0
        assert run_cli("prices", "refresh", "--only", "together", env=env).exit_code == 0
    assert load_price_table(provider="azure").lookup(NANO).source == first  # not nested
    assert "1x_nvidia_h100_80gb_sxm" in hardware_rates()  # both refreshes kept


def test_a_negative_or_not_finite_price_read_live_is_never_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed answer (a negative figure, NaN) must not become a rate: a negative hourly or
    per-token rate would shrink every reservation below what the job bills (NaN makes every
    worst case NaN). Such figures are skipped and the shipped rows stay."""
    import tests.prices_fake as fake

    hardware = [
        {"id": "1x_nvidia_h100_80gb_sxm", "pricing": {"cents_per_minute": -5.5}},
        {"id": "2x_nvidia_h100_80gb_sxm", "pricing": {"cents_per_minute": "NaN"}},
    ]
    monkeypatch.setattr(fake, "HARDWARE", hardware)
    tuned = {"training_price_per_million_tokens": -0.4}
    monkeypatch.setattr(fake, "NEBIUS_MODELS", [{**fake.NEBIUS_MODELS[0], "fine_tune": tuned}])
    monkeypatch.setattr(fake, "PAGE_ONE", [fake._meter("gpt 4.1 nano FT Trng Glbl", -0.0015, "1K")])
    with PriceServer() as server:
        run_cli("prices", "refresh", env=_env(server))
    assert hardware_rates() == {}
    assert load_price_table(provider="azure").lookup(NANO).training_per_1m == pytest.approx(1.65)
    llama = load_price_table(provider="nebius").lookup("meta-llama/Meta-Llama-3.1-8B-Instruct")
    assert llama.training_per_1m is None  # the shipped null: set it, or read a real figure

    row = (
        "rows:\n  - {model: m, provider: azure, training_per_1m: -1.5, input_per_1m: null,"
        " output_per_1m: null, fine_tuned_input_per_1m: null, fine_tuned_output_per_1m: null,"
        " source: s, as_of: '2026-01-01'}\n"
    )
    (tmp_path / "prices.local.yaml").write_text(row)
    assert_clean_error(run_cli("prices"), "prices.local.yaml", "training_per_1m must be a number")


def test_a_rate_converted_from_per_1k_reads_as_the_figure_it_is() -> None:
    """$0.00042 per 1K tokens is $0.42 per 1M; the float product was written and printed as
    0.42000000000000004 (`harness estimate`'s price line, the local table)."""
    from harness.sweep.estimate import price_line

    with PriceServer() as server:
        assert run_cli("prices", "refresh", "--only", "azure", env=_env(server)).exit_code == 0
    mini = load_price_table(provider="azure").lookup("gpt-4.1-mini-2025-04-14")
    assert mini.fine_tuned_input_per_1m == 0.42
    assert "fine-tuned input $0.42," in price_line(mini)
    odd = replace(mini, fine_tuned_output_per_1m=0.1 + 0.2)  # an override's own float noise
    assert "output $0.3," in price_line(odd)


def test_a_hardware_id_the_refreshed_list_lacks_is_named_not_sent_to_refresh_again() -> None:
    # After a refresh, a mistyped hardware id read "no hosting_per_hour price ... or run
    # `harness prices refresh`", which had just been run and could never supply it.
    from harness.backends import load_backend
    from harness.backends.together.config import TogetherBackendConfig
    from harness.errors import ConfigError

    model = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
    with PriceServer() as server:
        assert run_cli("prices", "refresh", "--only", "together", env=_env(server)).exit_code == 0
    serving = {"kind": "dedicated", "hardware": "1x_nvidia_h100_80gb_sxmm", "max_minutes": 30}
    config = TogetherBackendConfig(kind="together", model=model, serving=serving)
    with pytest.raises(ConfigError) as caught:
        load_backend(config).price_rows([model])[0].hosting_usd(1.0)
    message = str(caught.value)
    assert "no 1x_nvidia_h100_80gb_sxmm" in message and "1x_nvidia_h100_80gb_sxm," in message
    assert "backend.serving.hardware" in message and "harness prices refresh" not in message


def test_a_refresh_that_cannot_finish_writing_leaves_the_earlier_table_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The table was written in place: a full disk (or a kill) mid-write left half of it, and
    # then every command that prices anything stopped on the malformed local table.
    with PriceServer() as server:
        assert run_cli("prices", "refresh", "--only", "together", env=_env(server)).exit_code == 0
        local = tmp_path / "prices.local.yaml"
        before = local.read_text()

        def torn(self: Path, data: str, encoding: str | None = None) -> int:
            with open(self, "w", encoding=encoding) as out:
                out.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Path, "write_text", torn)
        result = run_cli("prices", "refresh", "--only", "nebius", env=_env(server))
    assert_clean_error(result, "cannot write the local price table", "No space left")
    assert local.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if "prices" in p.name] == ["prices.local.yaml"]


def test_a_local_table_of_hardware_only_is_not_said_to_replace_rows(tmp_path: Path) -> None:
    # After `refresh --only together` (hardware rates, no model rows) the listing said "Live
    # rows from ... replace the shipped ones" above shipped rows only.
    with PriceServer() as server:
        assert run_cli("prices", "refresh", "--only", "together", env=_env(server)).exit_code == 0
    said = " ".join(run_cli("prices").stdout.split())
    assert "Live rows from" not in said
    assert "no model rows" in said and "the shipped rows serve" in said

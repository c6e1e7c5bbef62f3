"""The price table and cost formulas: dated rows, lookups, overrides, the sweep's worst case."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import yaml

from harness.backends.base import Estimate
from harness.backends.hosted.config import PriceOverride
from harness.backends.hosted.pricing import base_model_of, is_fine_tuned, load_price_table
from harness.config import load_experiment
from harness.errors import ConfigError
from harness.records import Cost, TrialSpec
from harness.sweep.estimate import corner_specs, price_line, worst_case_total
from harness.sweep.search_space import load_search_space
from tests.conftest import ROOT

REQUIRED_MODELS = (
    "gpt-4.1-nano-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4o-mini-2024-07-18",
    "babbage-002",
    "davinci-002",
)


def test_shipped_table_has_dated_sourced_rows_for_required_models() -> None:
    table = load_price_table()
    for model in REQUIRED_MODELS:
        row = table.rows[model]
        assert row.source.startswith("https://"), row
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row.as_of), row
        assert row.training_per_1m and row.fine_tuned_input_per_1m and row.fine_tuned_output_per_1m
    assert table.rows["gpt-4.1-nano-2025-04-14"].training_per_1m == 1.50


def test_lookup_understands_fine_tuned_ids_checkpoints_and_aliases() -> None:
    table = load_price_table()
    nano = "gpt-4.1-nano-2025-04-14"
    assert table.lookup("ft:gpt-4.1-nano-2025-04-14:org:harness-t001:abc").model == nano
    assert table.lookup("ft:gpt-4.1-nano-2025-04-14:org:s:abc:ckpt-step-12").model == nano
    assert table.lookup("gpt-4.1-nano").model == nano
    assert table.lookup("ft:babbage-002:org:s:x").model == "babbage-002"
    assert base_model_of("ft:davinci-002:o:s:x") == "davinci-002"
    assert is_fine_tuned("ft:davinci-002:o:s:x") and not is_fine_tuned("davinci-002")
    with pytest.raises(ConfigError, match=r"no price for model 'my-model'.*backend\.prices"):
        table.lookup("my-model")


def test_cost_formulas_hand_computed() -> None:
    nano = load_price_table().lookup("gpt-4.1-nano-2025-04-14")
    assert nano.training_usd(2_000_000) == pytest.approx(3.00)  # 2M x $1.50/1M
    # 1M in x $0.20 + 0.5M out x $0.80 at fine-tuned rates; $0.10 / $0.40 for the base model.
    assert nano.inference_usd(1_000_000, 500_000, fine_tuned=True) == pytest.approx(0.60)
    assert nano.inference_usd(1_000_000, 500_000, fine_tuned=False) == pytest.approx(0.30)


def test_overrides_replace_fields_and_add_models() -> None:
    overrides = {
        "gpt-4.1-nano-2025-04-14": PriceOverride(training_per_1m=9.0, as_of="2030-01-01"),
        "proxy-model": PriceOverride(
            training_per_1m=1.0, fine_tuned_input_per_1m=2.0, fine_tuned_output_per_1m=3.0
        ),
    }
    table = load_price_table(overrides=overrides)
    nano = table.lookup("gpt-4.1-nano-2025-04-14")
    assert (nano.training_per_1m, nano.fine_tuned_input_per_1m) == (9.0, 0.20)
    assert (nano.source, nano.as_of) == ("experiment config", "2030-01-01")
    proxy = table.lookup("ft:proxy-model:org:s:x")
    assert proxy.inference_usd(1_000_000, 0, fine_tuned=True) == 2.0
    with pytest.raises(ConfigError, match="no input_per_1m price for proxy-model"):
        proxy.inference_usd(1, 1, fine_tuned=False)
    with pytest.raises(ConfigError, match="new model needs"):
        load_price_table(overrides={"other": PriceOverride(training_per_1m=1.0)})
    # An hourly rate is what `harness prices refresh` reads (Azure, Together hardware): the
    # message named only the setting, not the command that fills it in.
    with pytest.raises(ConfigError, match=r"or run `harness prices refresh`"):
        proxy.hosting_usd(1.0)


def test_malformed_table_is_named(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump({"rows": [{"model": "m", "training_per_1m": 1}]}))
    with pytest.raises(ConfigError, match=str(path)):
        load_price_table(path)


class _TokensTimesEpochs:
    """A backend whose estimate is easy to check: $1 per epoch per 100 training examples."""

    kind = "fake"

    def estimate(self, spec: TrialSpec, data: object) -> Estimate:
        n = spec.train_examples or 1000
        return Estimate(Cost(usd=spec.n_epochs * n / 100, trained_tokens=spec.n_epochs * n), Cost())


def test_worst_case_total_takes_the_dearest_corner_times_trials(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "n_epochs: {type: int, low: 1, high: 3}\n"
        "learning_rate_multiplier: {type: float, low: 0.1, high: 2.0, log: true}\n"
        "batch_size: {type: categorical, choices: [8, 4]}\n"
        "train_examples: {type: categorical, choices: [200, 800, 400]}\n"
        "base_model: {type: categorical, choices: [gpt-4.1-nano, babbage-002]}\n"
    )
    experiment_file = tmp_path / "exp.yaml"
    experiment_file.write_text(
        yaml.safe_dump(
            {
                "dataset": {"source": "x.csv"},
                "backend": {"kind": "openai"},
                "search_space": str(space),
                "study": {"n_trials": 5},
            }
        )
    )
    experiment = load_experiment(str(experiment_file))
    loaded = load_search_space(space)
    dearest = corner_specs(experiment, loaded)
    assert {(s.base_model, s.n_epochs, s.train_examples) for s in dearest} == {
        ("gpt-4.1-nano", 3, 800),
        ("babbage-002", 3, 800),
    }
    cheapest = corner_specs(experiment, loaded, dearest=False)
    assert {(s.n_epochs, s.train_examples) for s in cheapest} == {(1, 200)}
    total = worst_case_total(experiment, _TokensTimesEpochs(), None, loaded)  # type: ignore[arg-type]
    assert total.usd == pytest.approx(5 * 3 * 800 / 100)
    assert total.trained_tokens == 5 * 3 * 800


@pytest.mark.parametrize("name", ["openai_gpt41nano", "openai_babbage002"], ids=lambda name: name)
def test_shipped_openai_experiments_are_priced(name: str) -> None:
    experiment = load_experiment(str(ROOT / "experiments" / f"{name}.yaml"))
    assert experiment.config.backend.kind == "openai"
    load_price_table(overrides=experiment.config.backend.prices).lookup(
        experiment.config.backend.model
    )


def test_price_line_says_how_old_the_figures_are_and_the_hosting_rate() -> None:
    table = load_price_table()
    row = table.lookup("gpt-4.1-nano-2025-04-14")
    fresh = price_line(row, today=date.fromisoformat(row.as_of))
    assert f"as of {row.as_of}; 0 days old)" in fresh and "check the source" not in fresh
    stale = price_line(row, today=date(2026, 11, 30))
    assert re.search(r"as of 2025-07-01; 517 days old: check the source", stale)
    assert "hosting" not in stale  # OpenAI bills no hosting
    override = {"gpt-4.1-nano-2025-04-14": PriceOverride(hosting_per_hour=1.7)}
    hosted = price_line(load_price_table(overrides=override).lookup("gpt-4.1-nano-2025-04-14"))
    assert "hosting $1.7 an hour a deployment exists" in hosted


@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-7B-Instruct", "my-model"])
def test_a_missing_price_names_a_setting_that_set_reads_back(model: str) -> None:
    # Found against the Together test server: "Fix backend.prices.meta-llama/Meta-Llama-3.1-8B-
    # Instruct-Reference.training_per_1m", copied into --set, was refused ("unknown key"): the
    # dot in "3.1" split the model's name. The message must name it as --set reads it.
    from harness.backends.hosted.pricing import PriceTable, price_setting
    from harness.config import apply_overrides

    setting = price_setting(model, "training_per_1m")
    raw = apply_overrides({}, [f"{setting}=2.5"])
    assert raw == {"backend": {"prices": {model: {"training_per_1m": 2.5}}}}
    with pytest.raises(ConfigError) as missing:
        PriceTable({}).lookup(model)
    assert price_setting(model) in str(missing.value)
    with pytest.raises(ConfigError) as incomplete:
        PriceTable({}).with_overrides({model: PriceOverride(training_per_1m=1.0)})
    assert price_setting(model) in str(incomplete.value)

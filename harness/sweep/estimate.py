"""What a sweep will cost before anything is spent: `harness estimate`.

Nothing here calls an API or needs a key: token counts come from tiktoken (offline) for the
OpenAI backend and from the model's own tokenizer for the local one, whose per-token rates are
calibrated once per machine (see `harness.backends.local._calibration`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import date
from typing import Any

from harness.backends import load_backend
from harness.backends.base import Backend, Estimate
from harness.backends.hosted.pricing import Price
from harness.config import Experiment
from harness.data.summary import DataReport
from harness.errors import ConfigError
from harness.records import Cost, PreparedData, TrialSpec, usd
from harness.sweep.search_space import (
    SearchSpace,
    check_train_examples,
    experiment_space,
    oversized_train_examples,
)
from harness.sweep.study import make_sampler


@dataclass(frozen=True)
class TrialEstimate:
    """One configuration's estimated training and evaluation cost."""

    spec: TrialSpec
    estimate: Estimate


@dataclass(frozen=True)
class SweepEstimate:
    """The cheapest and dearest configurations, the worst case of the whole sweep, the prices."""

    backend: str
    n_trials: int
    cheapest: list[TrialEstimate]
    dearest: list[TrialEstimate]
    worst_total: Cost
    budget_usd: float | None
    prices: list[Price]
    synthetic: bool
    warnings: tuple[str, ...] = ()  # the space asks for more examples than the split holds

    @property
    def worst_trial(self) -> Cost:
        return max((row.estimate.total for row in self.dearest), key=lambda cost: cost.usd)

    @property
    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.worst_total.usd > self.budget_usd


def estimate_sweep(experiment: Experiment) -> SweepEstimate:
    """Price the experiment's search space at its cheapest and dearest corners.

    Raises:
        ConfigError: The config, search space or a price is missing or invalid.
        DataError: The dataset cannot be prepared.
    """
    from harness.data.prepare import prepare_experiment

    space = experiment_space(experiment)
    make_sampler(experiment, space)  # a sampler the space does not fit: refused as a sweep is
    backend = load_backend(experiment.config.backend)
    data, report = prepare_experiment(experiment)
    check_train_examples(space, len(data.labels))
    cheapest = [
        TrialEstimate(s, backend.estimate(s, data))
        for s in corner_specs(experiment, space, dearest=False)
    ]
    dearest = [TrialEstimate(s, backend.estimate(s, data)) for s in corner_specs(experiment, space)]
    models = sorted({row.spec.base_model for row in dearest})
    return SweepEstimate(
        backend=backend.kind,
        n_trials=trial_count(experiment, space),
        cheapest=cheapest,
        dearest=dearest,
        worst_total=worst_case_total(experiment, backend, data, space),
        budget_usd=experiment.config.budget_usd,
        prices=backend.price_rows(models),
        synthetic=backend.capabilities.synthetic,
        warnings=tuple(
            filter(
                None,
                [
                    oversized_train_examples(space, len(data.train)),
                    cut_texts(backend, data, report),
                ],
            )
        ),
    )


CUT_SHARE = 0.01  # a sweep warns when more than this share of a split's texts is cut


def cut_texts(backend: Backend, data: PreparedData, report: DataReport) -> str | None:
    """A warning when more than `CUT_SHARE` of a split's texts are longer than the model reads
    (`Backend.text_token_limit`): it learns and is scored on their beginnings only, which a
    user would rather know before paying (`harness prepare` counts them whatever the share)."""
    limit = backend.text_token_limit(data.labels)
    if limit is None:  # nothing is cut: no need to count every text's tokens
        return None
    counted = report.with_tokens(data, backend.count_tokens, limit)
    return counted.cut_warning("backend.max_length", CUT_SHARE)


# --- worst case of a sweep -----------------------------------------------------------------


def _cost_relevant_values(space: SearchSpace, name: str, default: Any, dearest: bool) -> list[Any]:
    """The values of a parameter that make a trial dearest (or cheapest); every base model."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if name in space.fixed:
        return [space.fixed[name]]
    dist = space.distributions.get(name)
    if dist is None:
        return [default]
    if isinstance(dist, CategoricalDistribution):
        choices: list[Any] = list(dist.choices)
        if name == "base_model":
            return choices
        return [max(choices) if dearest else min(choices)]
    if isinstance(dist, IntDistribution):
        top = dist.low + (dist.high - dist.low) // dist.step * dist.step
        return [top if dearest else dist.low]
    if isinstance(dist, FloatDistribution):
        return [dist.high if dearest else dist.low]
    raise ConfigError(f"{space.path}: {name}: cannot price distribution {dist!r}")


def _first_value(space: SearchSpace, name: str, default: Any) -> Any:
    if name in space.fixed:
        return space.fixed[name]
    dist = space.distributions.get(name)
    choices = getattr(dist, "choices", None)
    return choices[0] if choices else getattr(dist, "low", default)


def corner_specs(
    experiment: Experiment, space: SearchSpace, dearest: bool = True
) -> list[TrialSpec]:
    """One spec per base model the space allows, at the most (or fewest) epochs and examples,
    priced for whichever training subset a trial draws (`TrialSpec.bound`).

    Learning rate and batch size do not change what a job costs, so their first value is used.
    """
    models = _cost_relevant_values(space, "base_model", experiment.config.backend.model, dearest)
    epochs = _cost_relevant_values(space, "n_epochs", 1, dearest)
    examples = _cost_relevant_values(space, "train_examples", None, dearest)
    return [
        TrialSpec(
            number=0,
            n_epochs=int(n),
            learning_rate_multiplier=float(_first_value(space, "learning_rate_multiplier", 1.0)),
            batch_size=int(_first_value(space, "batch_size", 1)),
            base_model=str(model),
            train_examples=None if size is None else int(size),
            seed=experiment.config.seed,
            bound="dearest" if dearest else "cheapest",
        )
        for model, n, size in itertools.product(models, epochs, examples)
    ]


def trial_count(experiment: Experiment, space: SearchSpace) -> int:
    """The trials a sweep trains: `study.n_trials`, or a grid's size where that is fewer (a grid
    search stops once every configuration has been tried)."""
    n = experiment.config.study.n_trials
    if experiment.config.study.sampler.kind == "grid":
        n = min(n, math.prod(len(values) for values in space.grid().values()))
    return n


def worst_case_total(
    experiment: Experiment, backend: Backend, data: PreparedData, space: SearchSpace
) -> Cost:
    """What the whole sweep costs at most: the dearest trial, times `trial_count`.

    `Backend.estimate` is already a per-trial worst case; this takes the dearest corner of the
    search space, so no sampled configuration can cost more.
    """
    dearest = max(
        (backend.estimate(spec, data).total for spec in corner_specs(experiment, space)),
        key=lambda cost: cost.usd,
    )
    n = trial_count(experiment, space)
    return Cost(
        usd=dearest.usd * n,
        compute_seconds=dearest.compute_seconds * n,
        trained_tokens=dearest.trained_tokens * n,
        inference_tokens=dearest.inference_tokens * n,
    )


SYNTHETIC_LABEL = "(synthetic: test server)"


def estimate_table(estimate: SweepEstimate) -> Any:
    """A rich table: the cheapest and dearest corners of the search space, per base model.

    Backends that price tokens show trained and evaluation tokens; others compute seconds.
    """
    from rich.table import Table

    rows = [("min", row) for row in estimate.cheapest] + [("max", row) for row in estimate.dearest]
    models = sorted({row.spec.base_model for _, row in rows})
    one_model = len(models) == 1
    totals = [row.estimate.total for _, row in rows]
    tokens = any(total.trained_tokens or total.inference_tokens for total in totals)
    title = "Cost per trial, worst case, nothing spent"
    title += f": {models[0]}" if one_model else ""
    title += f" {SYNTHETIC_LABEL}" if estimate.synthetic else ""
    table = Table(title=title)
    headers = ["", *([] if one_model else ["model"]), "epochs", "examples"]
    hosted = any(row.estimate.evaluation.hosting_usd for _, row in rows)
    headers += ["trained tok", "train $", "eval tok", "eval $"] if tokens else ["compute s"]
    headers += ["hosting $"] if hosted else []
    for index, name in enumerate([*headers, "total $"]):
        table.add_column(name, justify="left" if index == 0 or name == "model" else "right")
    for corner, row in rows:
        spec = row.spec
        cells = [corner, *([] if one_model else [spec.base_model]), str(spec.n_epochs)]
        cells.append("all" if spec.train_examples is None else f"{spec.train_examples:,}")
        if tokens:
            train, evaluation = row.estimate.train, row.estimate.evaluation
            cells += [f"{train.trained_tokens:,}", usd(train.usd)]
            tokens_usd = evaluation.usd - evaluation.hosting_usd
            cells += [f"{evaluation.inference_tokens:,}", usd(tokens_usd)]
        else:
            cells.append(f"{row.estimate.total.compute_seconds:,.0f}")
        cells += [usd(row.estimate.evaluation.hosting_usd)] if hosted else []
        table.add_row(*cells, usd(row.estimate.total.usd))
    return table


def estimate_lines(estimate: SweepEstimate) -> list[str]:
    """The worst case of the whole sweep against the budget, and the prices it used."""
    label = f" {SYNTHETIC_LABEL}" if estimate.synthetic else ""
    lines = [
        f"Worst case per trial: {usd(estimate.worst_trial.usd)}; for "
        f"{estimate.n_trials} trials: {usd(estimate.worst_total.usd)}{label}.",
    ]
    if estimate.budget_usd is None:
        lines.append("No budget_usd set: nothing caps what the sweep may spend.")
    elif estimate.over_budget:
        lines.append(
            f"Over budget: the worst case exceeds budget_usd={usd(estimate.budget_usd)}; "
            "`harness sweep` asks before starting (--yes skips the question) and starts no "
            "trial whose worst case the remaining budget cannot cover."
        )
    else:
        lines.append(f"Within budget_usd={usd(estimate.budget_usd)}.")
    billed = any(row.estimate.evaluation.hosting_usd for row in estimate.dearest)
    lines.extend(price_line(price, hosting_billed=billed) for price in estimate.prices)
    lines.append("Estimate only: nothing was sent to any API and nothing was spent.")
    return lines


STALE_AFTER_DAYS = 180  # prices move; past this a row's date is worth a look at its source


def price_line(price: Price, today: date | None = None, hosting_billed: bool = True) -> str:
    """One model's rates in words, with its source and how old the figures are; a row's hourly
    rate that the sweep does not pay (`hosting_billed` False: Azure Developer deployments) is
    named as such."""
    hosting = ""
    if price.hosting_per_hour is not None:
        hosting = f", hosting ${_figure(price.hosting_per_hour)} an hour a deployment exists"
        hosting += "" if hosting_billed else " (not billed by this sweep: its scoring pays none)"
    return (
        f"Prices for {price.model} per 1M tokens: training ${_figure(price.training_per_1m)}, "
        f"fine-tuned input ${_figure(price.fine_tuned_input_per_1m)}, output "
        f"${_figure(price.fine_tuned_output_per_1m)}{hosting} ({price.source}, as of "
        f"{price.as_of}{age_words(price.as_of, today)})."
    )


def _figure(rate: float | None) -> str:
    """A rate as its figure (`0.3`, not `0.30000000000000004`); `None` for a missing one."""
    return "None" if rate is None else f"{rate:.10g}"


def age_days(as_of: str, today: date | None = None) -> int | None:
    """Days since a row's date; None for a free-form date in a user's override."""
    try:
        return ((today or date.today()) - date.fromisoformat(as_of[:10])).days
    except ValueError:
        return None


def age_words(as_of: str, today: date | None = None) -> str:
    """`; 37 days old`, with a warning past `STALE_AFTER_DAYS`; empty for a free-form date."""
    days = age_days(as_of, today)
    if days is None:
        return ""
    if days > STALE_AFTER_DAYS:
        return f"; {days} days old: check the source before trusting the figures"
    return f"; {days} days old"

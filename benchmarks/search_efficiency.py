"""Search efficiency: the accuracy-against-cost front each search strategy finds for its money.

Replays `benchmarks/data/response_surface.json` (real local-backend trials of a grid over the
demo's search space, recorded by `benchmarks.record_surface`, which says how). A proposed
configuration is snapped to the nearest recorded one (learning rate in log space) and "runs" by
reading its recorded epochs, so every strategy pays exactly what that trial cost when it was
measured, and an early-stopped trial pays only for the epochs it ran plus scoring its model.

Strategies, all with real Optuna samplers and the harness's own stopper:
- grid: every grid configuration (the textbook way); its front is the reference (100%);
- random: Optuna's RandomSampler;
- optuna default: what `optuna.create_study(directions=[...])` uses (TPE in Optuna 5);
- harness: what `harness sweep` does on the local backend by default: the sampler it builds
  (`harness.sweep.study.make_sampler`); every epoch's model but the last kept and scored on the test
  set as a point of its own (`harness.sweep.checkpoints`: it pays for saving it and for loading and
  scoring it, and the sampler is told about it as a completed trial); and
  `harness.sweep.stopping.FrontStopper` after every epoch (a stopped trial's model is the checkpoint
  of the epoch it reached).

Each strategy except grid spends at most `SPEND_SHARE` of the grid's total; like `harness sweep`,
it starts a trial only if the trial's full cost still fits. Hypervolume is the area dominated
by the front (maximise test accuracy, minimise dollars) up to a reference point: the lowest test
accuracy and the highest single-trial cost of the grid. Averaged over `SEEDS` sampler seeds.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from benchmarks.common import ROOT, BenchResult, Figure
from harness.records import Cost, EpochResult
from harness.sweep.stopping import Curve, FrontStopper

SURFACE = Path(__file__).resolve().parent / "data" / "response_surface.json"
SPEND_SHARE = 0.30
TARGET_HV = 0.95
SEEDS = 20
BUDGET_POINTS = (0.1, 0.2, 0.3, 0.5)  # spend shares at which the hypervolume curve is sampled


@dataclass(frozen=True)
class Outcome:
    """One trial as replayed: the point its model adds and what it cost."""

    cost: float
    accuracy: float
    epochs_run: int


class Surface:
    """The recorded grid: look a configuration up and price it stopped after any epoch."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.grid: dict[str, list[Any]] = payload["grid"]
        self.rate = payload["dollars_per_hour"] / 3600.0
        self.n_validation = payload["split_sizes"]["validation"]
        self.rows = {self.key(row["config"]): row for row in payload["rows"]}
        lrs = sorted(self.grid["learning_rate_multiplier"])
        self._log_lrs = [math.log(x) for x in lrs]
        self._lrs = lrs

    @staticmethod
    def key(config: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(config[k] for k in sorted(config))

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The search space the grid covers, as a user would declare it."""
        epochs, lrs = self.grid["n_epochs"], self.grid["learning_rate_multiplier"]
        return {
            "n_epochs": optuna.distributions.IntDistribution(min(epochs), max(epochs)),
            "learning_rate_multiplier": optuna.distributions.FloatDistribution(
                min(lrs), max(lrs), log=True
            ),
            "batch_size": optuna.distributions.CategoricalDistribution(self.grid["batch_size"]),
            "train_examples": optuna.distributions.CategoricalDistribution(
                self.grid["train_examples"]
            ),
        }

    def snap(self, params: dict[str, Any]) -> dict[str, Any]:
        """The recorded configuration nearest to `params` (learning rate in log space)."""
        log_lr = math.log(params["learning_rate_multiplier"])
        i = bisect.bisect_left(self._log_lrs, log_lr)
        near = min(
            (j for j in (i - 1, i) if 0 <= j < len(self._lrs)),
            key=lambda j: abs(self._log_lrs[j] - log_lr),
        )
        return {**params, "learning_rate_multiplier": self._lrs[near]}

    def row(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.rows[self.key(self.snap(params))]

    def cost_so_far(self, row: dict[str, Any], k: int, checkpoints: bool = False) -> float:
        """Dollars after k epochs of training and validation (what `EpochResult` reports); with
        `checkpoints`, every epoch but the last also saved its model on the way."""
        epochs = row["epochs"]
        seconds = row["load_seconds"] + sum(e["train_valid_seconds"] for e in epochs[:k])
        if checkpoints:
            seconds += row["save_seconds"] * min(k, len(epochs) - 1)
        return seconds * self.rate

    def outcome(self, row: dict[str, Any], k: int, checkpoints: bool = False) -> Outcome:
        """The trial's own model after epoch k: saved (unless a checkpoint already holds it),
        scored on the test split, and what it all cost."""
        epoch = row["epochs"][k - 1]
        saved = checkpoints and k < len(row["epochs"])
        seconds = epoch["test_seconds"] + (0.0 if saved else row["save_seconds"])
        return Outcome(
            self.cost_so_far(row, k, checkpoints) + seconds * self.rate, epoch["test_accuracy"], k
        )

    def scoring(self, row: dict[str, Any], k: int) -> float:
        """Dollars to score epoch k's checkpoint: load it from disk, predict the test split."""
        return (row["load_seconds"] + row["epochs"][k - 1]["test_seconds"]) * self.rate

    def checkpoint(self, row: dict[str, Any], k: int) -> Outcome:
        """Epoch k's checkpoint as a point of its own: training so far plus its scoring."""
        cost = self.cost_so_far(row, k, checkpoints=True) + self.scoring(row, k)
        return Outcome(cost, row["epochs"][k - 1]["test_accuracy"], k)

    def full(self, row: dict[str, Any]) -> Outcome:
        """The configuration trained to the end, one model, no checkpoints."""
        return self.outcome(row, len(row["epochs"]))

    def worst_case(self, row: dict[str, Any], checkpoints: bool) -> float:
        """What the trial costs at most: every epoch, and every checkpoint scored."""
        n = len(row["epochs"])
        extra = sum(self.scoring(row, k) for k in range(1, n)) if checkpoints else 0.0
        return self.outcome(row, n, checkpoints).cost + extra


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (cost, accuracy) points, cost minimised and accuracy maximised, up to
    `ref` = (highest cost, lowest accuracy)."""
    ref_cost, ref_acc = ref
    best = ref_acc
    area = 0.0
    inside = sorted((c, a) for c, a in points if c <= ref_cost and a >= ref_acc)
    for i, (cost, accuracy) in enumerate(inside):
        best = max(best, accuracy)
        next_cost = inside[i + 1][0] if i + 1 < len(inside) else ref_cost
        area += (next_cost - cost) * (best - ref_acc)
    return area


@dataclass
class Strategy:
    """A sampler factory (seed -> sampler) and whether the harness's stopper runs."""

    name: str
    sampler: Callable[[int], optuna.samplers.BaseSampler]
    stops: bool = False
    checkpoints: bool = False  # every epoch's model kept and scored: extra points
    grid: bool = False  # every configuration once, in a seeded random order (GridSampler's way)


@dataclass
class Replay:
    """One strategy, one seed: the points found and the spend after each trial."""

    points: list[tuple[float, float]] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)
    stopped: int = 0


def replay(surface: Surface, strategy: Strategy, seed: int, budget: float) -> Replay:
    """Run `strategy` on the surface until its next trial would not fit in `budget`."""
    if strategy.grid:
        return _replay_grid(surface, seed, budget)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler(seed))
    stopper = FrontStopper(surface.n_validation) if strategy.stops else None
    distributions, result, spent = surface.distributions(), Replay(), 0.0
    while True:
        trial = study.ask(distributions)
        row = surface.row(trial.params)
        if spent + surface.worst_case(row, strategy.checkpoints) > budget:
            break  # the harness reserves a trial's worst case before starting it
        ran = _run(surface, row, trial.params["n_epochs"], stopper, strategy.checkpoints)
        spent += ran.spend
        for point in ran.points:
            result.points.append((point.cost, point.accuracy))
            result.spend.append(spent)
        delivered = ran.points[-1]
        result.stopped += delivered.epochs_run < trial.params["n_epochs"]
        study.tell(trial, [delivered.accuracy, delivered.cost])
        for point in ran.points[:-1]:  # checkpoints: completed trials of their own
            study.add_trial(
                optuna.trial.create_trial(
                    params=trial.params,
                    distributions=trial.distributions,
                    values=[point.accuracy, point.cost],
                )
            )
    return result


def _replay_grid(surface: Surface, seed: int, budget: float) -> Replay:
    # Not Optuna's GridSampler: it calls `study.stop()` once the grid is done, which only works
    # inside `study.optimize`; the order is the same kind (seeded random), every row once.
    rows = list(surface.rows.values())
    random.Random(seed).shuffle(rows)
    result, spent = Replay(), 0.0
    for row in rows:
        out = surface.full(row)
        if spent + out.cost > budget:
            break
        spent += out.cost
        result.points.append((out.cost, out.accuracy))
        result.spend.append(spent)
    return result


@dataclass
class _Ran:
    """One trial replayed: its checkpoints' points, then its own model's; and the spend."""

    points: list[Outcome]
    spend: float


def _run(
    surface: Surface,
    row: dict[str, Any],
    n_epochs: int,
    stopper: FrontStopper | None,
    checkpoints: bool,
) -> _Ran:
    """Epoch by epoch, asking the stopper as `harness sweep` does; then score the checkpoints
    and teach the stopper every model's curve."""
    seen: list[EpochResult] = []
    for k in range(1, n_epochs + 1):
        epoch = row["epochs"][k - 1]
        seen.append(
            EpochResult(
                epoch=k,
                valid_accuracy=epoch["valid_accuracy"],
                valid_loss=epoch["valid_loss"],
                train_loss=epoch["train_loss"],
                cost_so_far=Cost(usd=surface.cost_so_far(row, k, checkpoints)),
            )
        )
        if stopper is not None and stopper.should_stop(seen, n_epochs):
            break
    ran = len(seen)
    kept = range(1, ran) if checkpoints else range(0)
    points = [surface.checkpoint(row, k) for k in kept]
    points.append(surface.outcome(row, ran, checkpoints))
    spend = points[-1].cost + sum(surface.scoring(row, k) for k in kept)
    if stopper is not None:
        for point in points:
            first = seen[: point.epochs_run]
            stopper.add(
                Curve(
                    tuple(e.valid_accuracy for e in first),
                    tuple(e.cost_so_far.usd for e in first),
                )
            )
    return _Ran(points, spend)


def _harness_sampler(seed: int) -> optuna.samplers.BaseSampler:
    from harness.config import load_experiment
    from harness.sweep.search_space import load_search_space
    from harness.sweep.study import make_sampler

    experiment = load_experiment(str(ROOT / "experiments" / "demo.yaml"), [f"seed={seed}"])
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    return make_sampler(experiment, space)


def strategies(surface: Surface) -> list[Strategy]:
    # Whatever this Optuna version picks when a user names no sampler (TPE in Optuna 5).
    default = type(optuna.create_study(directions=["maximize", "minimize"]).sampler)
    return [
        Strategy("grid", lambda seed: optuna.samplers.RandomSampler(seed=seed), grid=True),
        Strategy("random", lambda seed: optuna.samplers.RandomSampler(seed=seed)),
        Strategy("optuna default", lambda seed: default(seed=seed)),  # type: ignore[call-arg]
        Strategy("harness", _harness_sampler, stops=True, checkpoints=True),
    ]


def hv_at(result: Replay, share_budget: float, ref: tuple[float, float]) -> float:
    """Hypervolume of the points found before spend exceeded `share_budget`."""
    limit = share_budget * (1 + 1e-9)  # sums in another order differ in the last bits
    points = [p for p, s in zip(result.points, result.spend, strict=True) if s <= limit]
    return hypervolume(points, ref)


def run() -> BenchResult:
    """Replay every strategy over `SEEDS` seeds; hypervolume as a share of the grid's."""
    if not SURFACE.is_file():
        note = "no recorded surface: run `python -m benchmarks.record_surface` (about an hour)"
        return BenchResult(
            "search_efficiency", [Figure("harness HV share", 0.0, "-", False, note=note)]
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    surface = Surface(json.loads(SURFACE.read_text()))
    everything = [surface.full(row) for row in surface.rows.values()]
    grid_spend = sum(o.cost for o in everything)
    ref = (max(o.cost for o in everything), min(o.accuracy for o in everything))
    grid_hv = hypervolume([(o.cost, o.accuracy) for o in everything], ref)
    budget = SPEND_SHARE * grid_spend
    raw: dict[str, Any] = {"grid_spend_usd": grid_spend, "grid_hv": grid_hv, "reference": ref}
    figures: list[Figure] = []
    for strategy in strategies(surface):
        full = strategy.name == "grid"
        replays = [
            replay(surface, strategy, seed, grid_spend * (1.0001 if full else SPEND_SHARE))
            for seed in range(SEEDS)
        ]
        curve = {
            str(share): statistics.mean(
                hv_at(r, share * grid_spend, ref) / grid_hv for r in replays
            )
            for share in (*BUDGET_POINTS, 1.0)
        }
        share = statistics.mean(hv_at(r, budget, ref) / grid_hv for r in replays)
        spend = statistics.mean(r.spend[-1] / grid_spend if r.spend else 0.0 for r in replays)
        raw[strategy.name] = {
            "hv_share_by_spend_share": curve,
            "mean_points": statistics.mean(len(r.points) for r in replays),  # checkpoints too
            "mean_stopped": statistics.mean(r.stopped for r in replays),
            "mean_spend_share": spend,
        }
        if strategy.name == "harness":
            figures.append(
                Figure(
                    f"harness HV share at {SPEND_SHARE:.0%} of grid spend",
                    share,
                    f">= {TARGET_HV}",
                    share >= TARGET_HV,
                    note=f"mean of {SEEDS} seeds; spent {spend:.0%} of the grid",
                )
            )
        else:
            figures.append(
                Figure(
                    f"{strategy.name} HV share at {SPEND_SHARE:.0%} of grid spend",
                    share,
                    "-",
                    True,
                    note=f"mean of {SEEDS} seeds",
                )
            )
    return BenchResult("search_efficiency", figures, raw)

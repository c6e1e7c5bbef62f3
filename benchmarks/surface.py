"""A recorded response surface (`benchmarks.record_surface`) and the arithmetic of scoring fronts.

A surface is a grid of real trials: every configuration trained once, validation and test
accuracy and the seconds of every part recorded after every epoch, so a replay can price a trial
stopped after any epoch. A front is chosen as the report chooses, on validation accuracy against
dollars (`harness.sweep.study.pareto_front`), and scored by the hypervolume of the test
accuracies of the models chosen: a strategy is credited for what its choice is really worth.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from harness.sweep.pareto import pareto_front

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Outcome:
    """One model as replayed: what it cost so far, its validation and test accuracy."""

    cost: float
    accuracy: float  # test
    epochs_run: int
    valid: float = 0.0


class Surface:
    """The recorded grid: look a configuration up and price it stopped after any epoch."""

    def __init__(self, payload: dict[str, Any], name: str = "surface") -> None:
        self.name = name
        self.payload = payload
        self.grid: dict[str, list[Any]] = payload["grid"]
        self.rate = payload["dollars_per_hour"] / 3600.0
        self.n_validation = payload["split_sizes"]["validation"]
        self.rows = {self.key(row["config"]): row for row in payload["rows"]}
        lrs = sorted(self.grid["learning_rate_multiplier"])
        self._log_lrs = [math.log(x) for x in lrs]
        self._lrs = lrs

    @classmethod
    def load(cls, path: Path) -> Surface:
        return cls(json.loads(path.read_text()), path.stem)

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

    def _model(self, row: dict[str, Any], k: int, cost: float) -> Outcome:
        epoch = row["epochs"][k - 1]
        return Outcome(cost, epoch["test_accuracy"], k, epoch["valid_accuracy"])

    def outcome(self, row: dict[str, Any], k: int, checkpoints: bool = False) -> Outcome:
        """The trial's own model after epoch k: saved (unless a checkpoint already holds it),
        scored on the test split, and what it all cost."""
        saved = checkpoints and k < len(row["epochs"])
        seconds = row["epochs"][k - 1]["test_seconds"] + (0.0 if saved else row["save_seconds"])
        return self._model(row, k, self.cost_so_far(row, k, checkpoints) + seconds * self.rate)

    def scoring(self, row: dict[str, Any], k: int) -> float:
        """Dollars to score epoch k's checkpoint: load it from disk, predict the test split."""
        return (row["load_seconds"] + row["epochs"][k - 1]["test_seconds"]) * self.rate

    def checkpoint(self, row: dict[str, Any], k: int) -> Outcome:
        """Epoch k's checkpoint as a point of its own: training so far plus its scoring."""
        cost = self.cost_so_far(row, k, checkpoints=True) + self.scoring(row, k)
        return self._model(row, k, cost)

    def full(self, row: dict[str, Any]) -> Outcome:
        """The configuration trained to the end, one model, no checkpoints."""
        return self.outcome(row, len(row["epochs"]))

    def worst_case(self, row: dict[str, Any], checkpoints: bool) -> float:
        """What the trial costs at most: every epoch, and every checkpoint scored."""
        n = len(row["epochs"])
        extra = sum(self.scoring(row, k) for k in range(1, n)) if checkpoints else 0.0
        return self.outcome(row, n, checkpoints).cost + extra

    def reference(self) -> tuple[float, float]:
        """The hypervolume's reference point: the grid's dearest trial, its lowest test accuracy."""
        everything = [self.full(row) for row in self.rows.values()]
        return max(o.cost for o in everything), min(o.accuracy for o in everything)


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


def chosen_hypervolume(models: list[Outcome], ref: tuple[float, float]) -> float:
    """Hypervolume of the test accuracies of the front chosen on validation accuracy against
    cost (what the report chooses from; the test set only confirms)."""
    front = pareto_front([(m.valid, m.cost) for m in models])
    return hypervolume([(models[i].cost, models[i].accuracy) for i in front], ref)


def clairvoyant(surface: Surface, budget: float, ref: tuple[float, float]) -> float:
    """Hypervolume (as `search_efficiency.hv_at` scores it) of trials chosen knowing every
    recorded outcome, a ceiling for any strategy: each configuration, stopped after any epoch,
    with or without its epoch checkpoints scored, priced as the replay prices it; greedily the
    option adding the most hypervolume per dollar that still fits `budget`. Greedy, so the best
    choice reaches at least this."""
    options: list[tuple[float, list[Outcome]]] = []
    for row in surface.rows.values():
        for k in range(1, len(row["epochs"]) + 1):
            for kept in {range(0), range(1, k)}:
                models = [surface.checkpoint(row, j) for j in kept]
                models.append(surface.outcome(row, k, checkpoints=bool(kept)))
                scoring = sum(surface.scoring(row, j) for j in kept)
                options.append((models[-1].cost + scoring, models))
    chosen: list[Outcome] = []
    spent = value = 0.0
    while True:
        gains = [
            ((chosen_hypervolume(chosen + models, ref) - value) / cost, cost, models)
            for cost, models in options
            if spent + cost <= budget
        ]
        best = max(gains, key=lambda g: g[0], default=None)
        if best is None or best[0] <= 0:
            return value
        chosen += best[2]
        spent += best[1]
        value = chosen_hypervolume(chosen, ref)


def surface_files() -> list[Path]:
    """Every finished surface under `benchmarks/data` (the demo's first)."""
    return sorted(
        DATA.glob("response_surface*.json"), key=lambda p: (p.stem != "response_surface", p.name)
    )


def _prepared(surface: Surface) -> tuple[Any, str | None]:
    """The surface's own data split rebuilt from its experiment and overrides, or None and why
    not (no experiment named, or its digest differs from the recorded one)."""
    from benchmarks.common import ROOT
    from harness.config import load_experiment
    from harness.data.prepare import prepare_experiment

    payload = surface.payload
    if "experiment" not in payload:
        return None, "the surface does not say which experiment it was recorded on"
    overrides = list(payload.get("overrides", []))
    experiment = load_experiment(str(ROOT / payload["experiment"]), overrides)
    data, _ = prepare_experiment(experiment)
    if payload.get("data_digest") not in (None, data.digest):
        return None, f"data split differs from the recorded one (overrides {overrides})"
    return data, None


def chance(surface: Surface) -> float | None:
    """The validation accuracy of learning nothing, as `harness sweep` tells the fidelity
    sampler: the majority-class baseline on the surface's own validation split."""
    from harness.report.baselines import majority_baseline

    data, _ = _prepared(surface)
    return None if data is None else majority_baseline(data).valid_accuracy


def best_baseline(surface: Surface) -> tuple[float | None, str]:
    """The best test accuracy of the report's baselines (majority class, TF-IDF + logistic
    regression, the harness's own code) on the surface's own data split, and a note; None when
    the split cannot be rebuilt (its digest differs from the recorded one)."""
    from harness.report.baselines import majority_baseline, tfidf_baseline

    data, why = _prepared(surface)
    if data is None:
        return None, str(why)
    baselines = [majority_baseline(data), tfidf_baseline(data, surface.payload["dollars_per_hour"])]
    best = max(baselines, key=lambda b: b.accuracy or 0.0)
    return best.accuracy, f"{best.name} {best.accuracy:.3f}"

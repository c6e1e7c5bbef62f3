"""Multi-fidelity search: cheap evidence first, money on the promising (`study.sampler.kind:
fidelity`).

The training-set size (`train_examples`, when the search space samples it among two or more
values) is the fidelity. A new configuration is tried on the smallest training set worth trying;
the best of those finished on a training set (the top `1/ETA`, as asynchronous successive
halving, ASHA, promotes; ranked on validation accuracy against cost, `_ranked`) are trained
again on the next one. Epochs are a fidelity too, through the sweep's own early stopper and
epoch checkpoints: a trial that cannot reach the front stops, every epoch's model is a point.

What stays as it was: a promoted configuration is an ordinary trial. It is asked for under the
study's `launch` lock like any other, counts toward `n_trials`, and reserves its worst case in
the budget ledger before it runs. Promotions are decided from the study's own trials, so workers
sharing a study (asks are serialised by that lock) never promote a configuration twice: a
configuration with a trial on the next training set in any state (running, waiting to be
retried, finished or failed) is taken; one the budget skipped is passed over for the rest of
that sweep only, so that raising `budget_usd` runs it.

A model that learned nothing (validation accuracy within noise of always answering the majority
class, which the sweep tells the sampler: `set_chance`, `LEARNED_SE`) carries no ranking: it
ranks after every model of its rung that learned, so it is promoted only into places the
learners leave; the base sampler sees it as dominated (that baseline is free); and a rung where
too few of the configurations started on it learned is no longer where new ones start
(`FLOOR_TRIALS`): the floor rises to the next rung.

Nothing looks cheaper than it is: each training-set size is priced with the backend's estimate of
the whole trial (`backend.estimate`, fixed costs such as a hosted job's minimum or an hourly
deployment included), and a size that costs more than `RUNG_COST_RATIO` of the next one kept is
not a rung at all: its evidence would cost nearly as much as the answer.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from harness.tracking.record import TrialRecord

FIDELITY = "train_examples"
ETA = 2  # the top 1/ETA of a rung's finished trials are promoted (successive halving's eta)
# A training-set size is a rung only when it costs at most this share of the next rung kept.
# Successive halving with eta = 2 breaks even on pure screening at 1/2 (two trials at the low
# rung to promote one); a low rung's models are also points on the front, hence a little more.
# 2/3 measured best of 0.6, 2/3, 0.75 and 0.8 on the demo's surface (`benchmarks/README.md`).
RUNG_COST_RATIO = 2 / 3
# A model learned something when its validation accuracy beats always answering the majority
# class by more than this many standard errors of an accuracy at that level on the validation
# set (binomial): a model a few examples above that baseline is the baseline within noise.
LEARNED_SE = 1.0
# The floor rises past a rung once this many configurations started on it and fewer than the
# share successive halving promotes (1/eta) learned anything: that rung cannot rank enough of its
# configurations to promote them on evidence, so it only costs money. Demo surface: 4 and 6,
# and 1/eta against "none learned", measured alike (`benchmarks/README.md`).
FLOOR_TRIALS = 4
PLAN_ATTR = "harness_fidelity"  # system attribute: the configuration and rung a trial runs

Pricer = Callable[[dict[str, Any]], float]  # a configuration's worst case in dollars


def fidelity_values(distributions: dict[str, BaseDistribution]) -> list[Any] | None:
    """The fidelity's values, smallest first, when the space samples it among two or more."""
    dist = distributions.get(FIDELITY)
    if isinstance(dist, CategoricalDistribution):
        values = sorted(dist.choices)  # type: ignore[type-var]
    elif isinstance(dist, IntDistribution) and dist.high > dist.low:
        values = list(range(dist.low, dist.high + 1, dist.step))
    else:
        return None
    return values if len(values) >= 2 else None


def config_key(params: dict[str, Any]) -> str:
    """A configuration without its fidelity: what a promotion trains again on more data."""
    return repr(sorted((k, v) for k, v in params.items() if k != FIDELITY))


class FidelitySampler(BaseSampler):
    """Proposes new configurations at the lowest rung with a real Optuna sampler, and promotes
    the best finished ones to the next rung (see the module docstring).

    Args:
        base: The sampler that draws new configurations (TPE with the sweep's constraints).
        values: The fidelity's values, smallest first (`fidelity_values`).
        eta: Successive halving's reduction factor; the top `1/eta` of a rung are promoted.
    """

    def __init__(self, base: BaseSampler, values: Sequence[Any], eta: int = ETA) -> None:
        if len(values) < 2 or eta < 2:
            raise ValueError(f"needs two values or more and eta >= 2, got {values=}, {eta=}")
        self.base = base
        self.values = sorted(values)
        self.eta = eta
        self._pricer: Pricer | None = None
        self._plans: dict[int, dict[str, Any]] = {}  # trial id -> promoted params
        self._prices: dict[str, float] = {}  # estimates are deterministic: asked once each
        self._lock = threading.Lock()
        self._view_of: _LowestRung | None = None  # the base sampler's view of the last study
        self._learned_above: float | None = None  # None: chance not known, every model learned
        self._passed: set[tuple[str, Any]] = set()  # promotions this sweep's budget skipped

    def set_pricer(self, pricer: Pricer) -> None:
        """Price configurations (the sweep passes the backend's estimate); without one, every
        value is a rung."""
        self._pricer = pricer
        self._prices.clear()

    def set_chance(self, accuracy: float, n_validation: int) -> None:
        """Tell the sampler what learning nothing scores: the validation accuracy of always
        answering the most frequent training label (the report's majority-class baseline), on
        `n_validation` examples. Without it, every finished model counts as having learned."""
        if not 0.0 <= accuracy <= 1.0 or n_validation < 1:
            raise ValueError(f"needs an accuracy and examples, got {accuracy=}, {n_validation=}")
        noise = math.sqrt(accuracy * (1.0 - accuracy) / n_validation)
        self._learned_above = accuracy + LEARNED_SE * noise

    def learned(self, trial: FrozenTrial) -> bool:
        """Whether a finished trial's model beat learning nothing (`set_chance`) beyond noise."""
        return self._learned_above is None or float(trial.values[0]) > self._learned_above

    def floor(self, trials: Sequence[FrozenTrial]) -> Any:
        """The smallest fidelity value new configurations start on (see `FLOOR_TRIALS`): a value
        where that many configurations started (finished trials not promoted there) and fewer
        than `1/eta` of them learned is passed over; the largest value never is."""
        start = _start_values(trials)  # promoted trials and their retries are not starters
        started = [
            t for t in trials if _candidate(t) and t.params[FIDELITY] == start[config_key(t.params)]
        ]
        for value in self.values[:-1]:
            here = [t for t in started if t.params.get(FIDELITY) == value]
            learned = sum(self.learned(t) for t in here)
            if len(here) < FLOOR_TRIALS or learned * self.eta >= len(here):
                return value
        return self.values[-1]

    def rungs(self, params: dict[str, Any]) -> list[Any]:
        """The fidelity values worth running for this configuration, smallest first: walking
        down from the largest, a value is kept when it costs at most `RUNG_COST_RATIO` of the
        last value kept (fixed per-trial costs included, as the backend estimates them). Prices
        grow with the training set, so the next value kept is bisected for: an int range has
        many values, and each price is a backend estimate."""
        if self._pricer is None:
            return list(self.values)
        kept = [self.values[-1]]
        left = len(self.values) - 1  # values[:left] are still to be looked at
        while left:
            limit = RUNG_COST_RATIO * self._price({**params, FIDELITY: kept[0]})
            low, high, found = 0, left - 1, -1
            while low <= high:
                mid = (low + high) // 2
                if self._price({**params, FIDELITY: self.values[mid]}) <= limit:
                    found, low = mid, mid + 1
                else:
                    high = mid - 1
            if found < 0:
                break
            kept.insert(0, self.values[found])
            left = found
        return kept

    def _price(self, params: dict[str, Any]) -> float:
        assert self._pricer is not None
        key = repr(sorted(params.items()))
        if key not in self._prices:
            self._prices[key] = self._pricer(params)
        return self._prices[key]

    def promotion(self, study: Study) -> dict[str, Any] | None:
        """The params of the next promotion due, from the highest rung down; None when none is.

        A rung's candidates are its finished trials (epoch checkpoints and skipped trials are not
        candidates), those that learned first, each group best first (`_ranked`); the top
        `len // eta` may be promoted, each to its next rung, unless a trial of that
        configuration at that rung exists in any state but skipped for the budget.
        """
        trials = study.get_trials(deepcopy=False)
        # A trial the budget skipped (PRUNED, the harness's only use of it): due in a later sweep.
        held = [t for t in trials if t.state != TrialState.PRUNED]
        taken = {(config_key(t.params), t.params.get(FIDELITY)) for t in held if t.params}
        taken |= self._passed
        taken |= {
            (plan["key"], plan["value"])
            for t in held
            if isinstance(plan := t.system_attrs.get(PLAN_ATTR), dict)
        }
        finished = [t for t in trials if _candidate(t)]
        for value in reversed(self.values[:-1]):
            rung = [t for t in finished if t.params.get(FIDELITY) == value]
            # A model that learned nothing says nothing of its configuration but that it was
            # cheap (which puts it on the front): those that learned are ranked and go first;
            # the rest fill the places left, since more data may be all they lacked.
            ranked = _ranked([t for t in rung if self.learned(t)])
            ranked += _ranked([t for t in rung if not self.learned(t)])
            for trial in ranked[: len(rung) // self.eta]:
                ladder = self.rungs(trial.params)
                above = [v for v in ladder if v > value]
                key = config_key(trial.params)
                if above and (key, above[0]) not in taken:
                    return {**trial.params, FIDELITY: above[0]}
        return None

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        # An enqueued trial, or a retry queued again with its params (`study.requeue`), runs
        # those: noting a promotion on it would take that promotion from every later ask.
        if "fixed_params" in trial.system_attrs or trial.params:
            return
        params = self.promotion(study)
        if params is not None:
            plan = {"key": config_key(params), "value": params[FIDELITY], "promoted": True}
            # Stored at once: a worker asking next sees this promotion taken.
            study._storage.set_trial_system_attr(trial._trial_id, PLAN_ATTR, plan)
            with self._lock:
                self._plans[trial._trial_id] = params
        self.base.before_trial(self._view(study), trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if trial._trial_id in self._plans:
            return {}
        space = self.base.infer_relative_search_space(self._view(study), trial)
        return {k: v for k, v in space.items() if k != FIDELITY}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial._trial_id in self._plans or not search_space:
            return {}
        return self.base.sample_relative(self._view(study), trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        plan = self._plans.get(trial._trial_id)
        if plan is not None and param_name in plan:
            return plan[param_name]
        if param_name == FIDELITY:
            # A new configuration starts on its lowest rung at or above the floor, priced with
            # what is drawn so far (parameters not drawn yet at their first value: the harness
            # draws the fidelity last, `study.ask`, so this is the configuration itself there).
            ladder = self.rungs({**_first_values(trial), **trial.params})
            floor = self.floor(study.get_trials(deepcopy=False))
            return next(v for v in ladder if v >= floor)
        view = self._view(study)
        return self.base.sample_independent(view, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        plan = trial.system_attrs.get(PLAN_ATTR)
        with self._lock:  # a promotion the budget skipped is passed over in this sweep
            self._plans.pop(trial._trial_id, None)
            if state == TrialState.PRUNED and isinstance(plan, dict):
                self._passed.add((plan["key"], plan["value"]))
        self.base.after_trial(study, trial, state, values)

    def _view(self, study: Study) -> Study:
        with self._lock:
            view = self._view_of
            if (
                view is None
                or view._storage is not study._storage
                or (view._study_id != study._study_id)
            ):
                view = self._view_of = _LowestRung(study, self)
            return view

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def _candidate(trial: FrozenTrial) -> bool:
    """A finished trial that trained its configuration (not an epoch checkpoint)."""
    if trial.state != TrialState.COMPLETE or not trial.values:
        return False
    return not TrialRecord.from_attrs(trial.user_attrs).is_checkpoint


def _start_values(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    """Each configuration's smallest fidelity value tried: the rung it started on."""
    start: dict[str, Any] = {}
    for t in trials:
        if FIDELITY in t.params:
            key = config_key(t.params)
            start[key] = min(start.get(key, t.params[FIDELITY]), t.params[FIDELITY])
    return start


def _ranked(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """A rung's finished trials, best first: by non-dominated rank of (validation accuracy up,
    cost down), then validation accuracy (accuracy alone in a one-objective study).

    Why the rank: the study looks for the accuracy-against-cost front, so a configuration that
    is nearly as accurate for much less money is as worth confirming on more data as the most
    accurate one (measured on the demo's surface: a point or two of hypervolume at 10% and 20%
    of the grid's spend over accuracy alone; `benchmarks/README.md`).
    """
    if not trials or len(trials[0].values) < 2:
        return sorted(trials, key=lambda t: (-float(t.values[0]), t.number))
    rank: dict[int, int] = {}
    left, level = list(trials), 0
    while left:
        for t in left:
            if not any(_dominates(o, t) for o in left):
                rank[t.number] = level
        left = [t for t in left if t.number not in rank]
        level += 1
    return sorted(trials, key=lambda t: (rank[t.number], -float(t.values[0]), t.number))


def _dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
    """`a` at least as accurate and as cheap as `b`, and better on one of the two."""
    (acc_a, cost_a), (acc_b, cost_b) = a.values[:2], b.values[:2]
    return acc_a >= acc_b and cost_a <= cost_b and (acc_a > acc_b or cost_a < cost_b)


def _first_values(trial: FrozenTrial) -> dict[str, Any]:
    first: dict[str, Any] = {}
    for name, dist in trial.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            first[name] = dist.choices[0]
        elif hasattr(dist, "low"):
            first[name] = dist.low
    return first


class _LowestRung(Study):
    """The study as the base sampler sees it: only evidence at the rung each configuration
    started on (a trial of a configuration also tried on a smaller training set is left out).

    Why: every new configuration is drawn at its lowest rung, so that evidence is like for like;
    a promoted trial's accuracy (more data) and cost (more money) would teach the base sampler
    that its own parameters, not the training-set size, moved both. A configuration that proves
    itself is promoted by the successive-halving rule, not by the base sampler. A model that
    learned nothing is shown at the dearest cost in view (`_nothing_learned_is_dear`).
    """

    def __init__(self, study: Study, sampler: FidelitySampler) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage, sampler=sampler)
        self._fidelity = sampler

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Any = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        # Never this view's own cache: Optuna clears the real study's at each ask, not this one.
        every = super()._get_trials(deepcopy=False, states=None, use_cache=False)
        start = _start_values(every)
        kept = [
            t
            for t in every
            if (states is None or t.state in states)
            and t.params.get(FIDELITY) == start.get(config_key(t.params))
        ]
        return self._nothing_learned_is_dear(kept, deepcopy)

    def _nothing_learned_is_dear(
        self, trials: list[FrozenTrial], deepcopy: bool
    ) -> list[FrozenTrial]:
        """The trials, a model that learned nothing shown at the dearest cost in view.

        Why: always answering the majority class is free and as accurate, so such a model is
        dominated, as the report's front (baselines included) shows it; told its real, small
        cost, a two-objective base sampler would rank it on the front and draw more like it.
        """
        done = [t for t in trials if t.state == TrialState.COMPLETE and len(t.values or ()) > 1]
        if not done:
            return copy.deepcopy(trials) if deepcopy else trials
        dearest = max(float(t.values[1]) for t in done)
        empty = {t._trial_id for t in done if not self._fidelity.learned(t)}
        shown = [copy.deepcopy(t) if deepcopy or t._trial_id in empty else t for t in trials]
        for t in shown:
            if t._trial_id in empty:
                t.values = [float(t.values[0]), dearest]
        return shown


def attach_pricer(sampler: BaseSampler, pricer: Pricer) -> None:
    """Let a fidelity sampler price its rungs (no-op for any other sampler)."""
    if isinstance(sampler, FidelitySampler):
        sampler.set_pricer(pricer)


def attach_chance(sampler: BaseSampler, accuracy: float, n_validation: int) -> None:
    """Tell a fidelity sampler what learning nothing scores (no-op for any other sampler)."""
    if isinstance(sampler, FidelitySampler):
        sampler.set_chance(accuracy, n_validation)


def make_fidelity_sampler(
    base: BaseSampler, distributions: dict[str, BaseDistribution]
) -> optuna.samplers.BaseSampler:
    """The fidelity sampler over `base`; ConfigError-free: callers check `fidelity_values`."""
    values = fidelity_values(distributions)
    if values is None:
        raise ValueError(f"no fidelity to search over: {FIDELITY} must take two values or more")
    return FidelitySampler(base, values, eta=ETA)

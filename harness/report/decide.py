"""The decision rule: walk the validation front cheapest-first, stop where no step is worth it.

The Pareto front of validation accuracy against cost is sorted by cost. Starting from its
cheapest member (the current choice), the walk repeats:

- **Negligible extra cost.** When the next member costs at most `NEGLIGIBLE_SHARE` more than the
  model last bought on evidence, or at most `NEGLIGIBLE_USD` more, the point estimate decides: a
  member more accurate on validation is taken, no money worth testing for being at stake, so a
  tie on significance does not go to the cheaper model. Such steps are measured from the same
  model, so a run of them cannot add up unseen.
- **Otherwise, a tested step up.** Every dearer member within reach (the budget; without a value
  per point or a budget, the knee of the front) is compared with the current choice on
  validation accuracy (`UnpairedComparison`, one-sided). The members of the front were picked
  from all the candidates dearer than the current choice on the same validation data, so each
  comparison is tested at alpha divided by that number of candidates (Bonferroni): the chance
  that any dearer candidate no better than the current choice passes stays below alpha however
  the front came out. Without a value per point a step is worth it when its gain is shown; with
  `value_per_point`, when its net value, value x gain - extra cost, is surely positive (the
  gain's one-sided lower bound, priced, exceeds the extra cost). The walk buys the cheapest step
  worth it and goes on from there; when none is, it stops, and the step that came closest is the
  comparison that decided it.

Each step up is a claim "this dearer model is better than the current one", tested at
family-wise alpha, and the walk stops at the first stage where no claim can be made, so the
chance of paying for a dearer model that is no better stays below alpha: about 3% at alpha 0.05
with 20 equally accurate candidates in the worst case of independent errors, less when the
models' errors are correlated, as they are on a shared validation set (`tests/test_verdicts.py`
measures it). Stepping only to the next neighbour instead would be blind to a real gain that
sits behind a cheaper member as good as the current one (a +5-point gain behind nine such
candidates: found in about 3% of simulated sweeps, against 64% for this rule). The test set
plays no part in the walk: it checks the choice once afterwards (see `harness.report.front`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from harness.report.significance import ALPHA, UnpairedComparison

NEGLIGIBLE_SHARE = 0.05
NEGLIGIBLE_USD = 0.0001

Kind = Literal["tested", "negligible", "budget", "knee"]


@dataclass(frozen=True)
class Rule:
    """What the reader asks of the walk: the family-wise level, and optionally what a validation
    accuracy point is worth (the net-value rule) and the most a model may cost."""

    alpha: float = ALPHA
    value_per_point: float | None = None
    budget: float | None = None


def negligible(extra_cost: float, anchor_cost: float) -> bool:
    """True when `extra_cost` over a model costing `anchor_cost` is too small to test for."""
    return extra_cost <= max(NEGLIGIBLE_SHARE * anchor_cost, NEGLIGIBLE_USD)


@dataclass(frozen=True)
class Move:
    """One step the walk considered: from the current choice `start` to a dearer front member
    `end` (indices into the front).

    `kind`: `tested` (on validation, at alpha / `family`), `negligible` (the point estimate
    decided), `budget` or `knee` (the walk stopped before `end` without testing it). `taken`:
    the walk moved to `end`. A declined tested move is the closest of the members tested.
    """

    start: int
    end: int
    kind: Kind
    taken: bool
    test: UnpairedComparison | None
    extra_cost: float
    value_per_point: float | None = None
    family: int = 1  # candidates the step was picked from: its test is at alpha / family

    @property
    def gain_points(self) -> float | None:
        return None if self.test is None else 100.0 * self.test.difference

    @property
    def net_value(self) -> tuple[float, float, float] | None:
        """value x gain - extra cost: the estimate and its one-sided bounds at the test's level
        (dollars)."""
        if self.value_per_point is None or self.test is None:
            return None
        worth, t = 100.0 * self.value_per_point, self.test
        return (
            worth * t.difference - self.extra_cost,
            worth * t.low - self.extra_cost,
            worth * t.high - self.extra_cost,
        )


@dataclass(frozen=True)
class Walk:
    """Where the walk ended (`chosen`, an index into the front) and every step it considered."""

    chosen: int
    moves: tuple[Move, ...]
    over_budget: bool = False
    top: int = 0  # the dearest member within reach (budget, knee)

    def fate(self, index: int) -> Move | None:
        """The move that settled front member `index`: the one ending there, else the tested
        move that considered it on the way (its `end` is another member: this one was tested and
        not worth it), else None (never reached)."""
        for move in self.moves:
            if move.end == index:
                return move
        for move in self.moves:
            last = move.end if move.taken else self.top
            if move.kind == "tested" and move.start < index <= last:
                return move
        return None

    @property
    def deciding(self) -> Move | None:
        """The comparison that decided the choice: the step the walk stopped at, else (it ran to
        the top) the step that bought the chosen member; None for a front of one member."""
        if self.moves and not self.moves[-1].taken and self.moves[-1].kind != "negligible":
            return self.moves[-1]
        taken = [m for m in self.moves if m.taken]
        return taken[-1] if taken else (self.moves[-1] if self.moves else None)

    @property
    def chosen_over(self) -> int | None:
        """The front member the chosen one was chosen over, named before the test set is read:
        the other end of the deciding comparison; where the walk stopped for money (budget,
        knee), the member the chosen one was bought over on evidence, if any."""
        move = self.deciding
        if move is None:
            return None
        if move.kind in ("budget", "knee"):
            bought = [m for m in self.moves if m.taken and m.end == self.chosen]
            if bought and bought[-1].kind == "tested":
                return bought[-1].start
        return move.start if move.end == self.chosen else move.end


def _worth(test: UnpairedComparison | None, gain: float, extra: float, value: float | None) -> bool:
    if test is None:  # no validation size known: the point estimate is all there is
        return gain > 0 and (value is None or 100.0 * value * gain > extra)
    if value is None:
        return test.gain_shown
    return 100.0 * value * test.low > extra


def _margin(
    test: UnpairedComparison | None, gain: float, extra: float, value: float | None
) -> float:
    """How close a declined step came to being worth it (higher: closer), to name the best case."""
    if test is None:
        return gain if value is None else 100.0 * value * gain - extra
    return -test.p_value if value is None else 100.0 * value * test.low - extra


def _reach(costs: Sequence[float], budget: float | None, last: int | None) -> int:
    """Index of the dearest member the walk may reach (within the budget, up to the knee)."""
    top = len(costs) - 1 if last is None else min(last, len(costs) - 1)
    while budget is not None and top > 0 and costs[top] > budget:
        top -= 1
    return top


@dataclass
class _Walker:
    """The walk's state along one front (see `walk`)."""

    accuracies: Sequence[float]
    costs: Sequence[float]
    n_valid: int | None
    rule: Rule
    pool: Sequence[float]
    current: int = 0

    @property
    def value(self) -> float | None:
        return self.rule.value_per_point

    @property
    def budget(self) -> float | None:
        return self.rule.budget

    def move(self, end: int, kind: Kind, taken: bool = False, family: int = 1) -> Move:
        a, b = self.accuracies[self.current], self.accuracies[end]
        test = (
            UnpairedComparison(self.n_valid, self.n_valid, a, b, self.rule.alpha / family)
            if self.n_valid
            else None
        )
        extra = self.costs[end] - self.costs[self.current]
        return Move(self.current, end, kind, taken, test, extra, self.value, family)

    def family(self) -> int:
        """Candidates dearer than the current choice (within the budget)."""
        low, high = self.costs[self.current], self.budget
        return max(1, sum(low < c and (high is None or c <= high) for c in self.pool))

    def step_up(self, start: int, top: int) -> Move:
        """The cheapest member in start..top worth buying (taken), else the closest (not)."""
        tried = [self.move(end, "tested", family=self.family()) for end in range(start, top + 1)]
        gains = [self.accuracies[m.end] - self.accuracies[self.current] for m in tried]
        for m, gain in zip(tried, gains, strict=True):
            if _worth(m.test, gain, m.extra_cost, self.value):
                return replace(m, taken=True)
        closest = max(
            zip(tried, gains, strict=True),
            key=lambda mg: _margin(mg[0].test, mg[1], mg[0].extra_cost, self.value),
        )
        return closest[0]

    def run(self, top: int) -> Walk:
        position, anchor, moves = 1, self.costs[0], []
        while position < len(self.costs):
            if position > top:
                over = self.budget is not None and self.costs[position] > self.budget
                moves.append(self.move(position, "budget" if over else "knee"))
                break
            if negligible(self.costs[position] - anchor, anchor):
                taken = self.accuracies[position] > self.accuracies[self.current]
                moves.append(self.move(position, "negligible", taken))
                self.current = position if taken else self.current
                position += 1
                continue
            moves.append(self.step_up(position, top))
            if not moves[-1].taken:
                break
            self.current = moves[-1].end
            position, anchor = self.current + 1, self.costs[self.current]
        return Walk(self.current, tuple(moves), top=top)


def walk(
    accuracies: Sequence[float],
    costs: Sequence[float],
    n_valid: int | None,
    rule: Rule = Rule(),
    last: int | None = None,
    candidates: Sequence[float] | None = None,
) -> Walk:
    """Walk a front (sorted by cost; validation accuracies) and return where it stops.

    Args:
        accuracies: Validation accuracy of each front member, cheapest first.
        costs: Cost of each, ascending.
        n_valid: Validation examples every member was scored on (None: unknown, the point
            estimate decides every step).
        rule: The family-wise one-sided level of each step up (`alpha`); `value_per_point`,
            dollars one validation accuracy point is worth (the net-value rule); `budget`, the
            most a member may cost.
        last: Index of the last member the walk may reach (the knee), None for no limit.
        candidates: Costs of every model the front was drawn from, its members included: a step
            up from a member shares `alpha` among the candidates dearer than it (within the
            budget). Default: the front's own costs (valid only for a front not formed on the
            same data).
    """
    if rule.budget is not None and costs[0] > rule.budget:
        return Walk(0, (), over_budget=True)
    pool = list(candidates) if candidates is not None else list(costs)
    return _Walker(accuracies, costs, n_valid, rule, pool).run(_reach(costs, rule.budget, last))

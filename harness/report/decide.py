"""The decision rule: the most valuable front member whose advantage is real.

The Pareto front of validation accuracy against cost is sorted by cost. Every candidate has a
selection-corrected expected accuracy (`harness.report.evidence.Evidence`: paired on the same
validation examples, shrunk for having picked the best of many, tied where no difference is
shown). What a candidate is worth:

- with `value_per_point` (dollars a point of accuracy is worth): value x expected accuracy -
  cost, the expected net value (cost of running it included where the report was given a volume);
- with only a budget, or neither (the knee mode): the expected accuracy, ties going to the cheaper.

From the cheapest member the walk looks at everything dearer within reach (the budget; without a
value or a budget, the knee of the front). With a value or a budget, the most valuable, `best`, is
bought over the most valuable cheaper alternative, `rival`, when the evidence shows it is better
(`Evidence.estimate`: among contenders shown to differ, the expected values decide; anywhere a
tie is plausible, a one-sided paired test at alpha shared among the candidates dearer than
`rival` must pass). If it is not shown, `best` drops out and the walk looks again at the rest (a
dearer member, worth less than `best`, may still be shown better than where the walk stands; a
member declined against a `rival` that then drops out itself is weighed again, once); if it is,
the walk goes on from `best`. It stops where staying is worth most.

In the knee mode nothing prices a gain, so the walk steps to the cheapest member within reach
whose paired gain over where it stands is shown at alpha shared among the candidates dearer than
it (or, for a negligible extra cost, whose expected accuracy is higher), and again from there.

So a dearer model that is no better than a cheaper one, picked from many, is bought in at most
about alpha of sweeps at any value per point and any price scale (`tests/test_verdicts.py`: 20
equally accurate candidates; two candidates at a value per point are one comparison, decided on
its expected value, though the dearer is bought over a cheaper baseline only when shown better
than it too), while among configurations shown to differ the choice is the one of
highest expected net value, not the cheapest significant step. The test set plays no part: it
checks the choice once afterwards (see `harness.report.front`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from harness.report.evidence import Estimate, Evidence, ValidationComparison
from harness.report.significance import ALPHA

Kind = Literal["tested", "budget", "knee"]

# An extra cost of at most this share of the cheaper member's is negligible: past the knee it is
# still within reach, and in the knee mode it is bought on expected accuracy, as a budget would
# (relative, so it means the same at local and hosted prices).
NEGLIGIBLE_SHARE = 0.05


@dataclass(frozen=True)
class Rule:
    """What the reader asks of the walk: the family-wise level, optionally what a validation
    accuracy point is worth (the net-value rule), the most a model may cost, and `risk`: decide
    on this quantile of the true gain instead of its mean (0.5)."""

    alpha: float = ALPHA
    value_per_point: float | None = None
    budget: float | None = None
    risk: float = 0.5


@dataclass(frozen=True)
class Move:
    """One comparison the walk made, between front members `start` (the cheaper alternative) and
    `end` (indices into the front).

    `kind`: `tested` (on validation), `budget` or `knee` (the walk stopped before `end`).
    `taken`: the walk bought `end`. `test` is the raw paired comparison of `end` against `start`
    at alpha / `family`; `estimate` the selection-corrected gain and whether it was shown.
    """

    start: int
    end: int
    kind: Kind
    taken: bool
    test: ValidationComparison | None
    extra_cost: float
    value_per_point: float | None = None
    family: int = 1
    estimate: Estimate | None = None
    origin: int | None = None  # where the walk stood, when `start` is a cheaper rival above it

    @property
    def gain_points(self) -> float | None:
        return None if self.test is None else 100.0 * self.test.difference

    @property
    def low(self) -> int:
        """The cheapest front member the move stepped from (the walk's position)."""
        return self.start if self.origin is None else min(self.origin, self.start)

    @property
    def shown(self) -> bool:
        return self.estimate is not None and self.estimate.shown

    @property
    def net_value(self) -> tuple[float, float, float] | None:
        """value x expected gain - extra cost, and its 95% interval (dollars)."""
        if self.value_per_point is None or self.estimate is None:
            return None
        worth = 100.0 * self.value_per_point
        low, high = self.estimate.interval()
        gain = self.estimate.gain
        return (
            worth * gain - self.extra_cost,
            worth * low - self.extra_cost,
            worth * high - self.extra_cost,
        )


@dataclass(frozen=True)
class Walk:
    """Where the walk ended (`chosen`, an index into the front) and every comparison it made."""

    chosen: int
    moves: tuple[Move, ...]
    over_budget: bool = False
    top: int = 0  # the dearest member within reach (budget, knee)

    def fate(self, index: int) -> Move | None:
        """The move that settled front member `index`: the one ending there, else a taken move
        that passed over it (None: never weighed)."""
        ending = [m for m in self.moves if m.end == index]
        if ending:
            return ending[-1]
        return next((m for m in self.moves if m.taken and m.low < index < m.end), None)

    @property
    def deciding(self) -> Move | None:
        """The comparison that decided the choice: the last one the walk declined from the
        chosen member (where it stopped), else the one that bought the chosen member."""
        declined = [m for m in self.moves if not m.taken and m.start == self.chosen]
        if declined:
            return declined[-1]
        taken = [m for m in self.moves if m.taken]
        return taken[-1] if taken else None

    @property
    def chosen_over(self) -> int | None:
        """The front member the chosen one was chosen over, named before the test set is read:
        the other end of the deciding comparison; where the walk stopped for money (budget,
        knee), the member the chosen one was bought over, if any."""
        move = self.deciding
        if move is None:
            return None
        if move.kind in ("budget", "knee"):
            bought = [m for m in self.moves if m.taken and m.end == self.chosen]
            return bought[-1].start if bought else None
        return move.start if move.end == self.chosen else move.end


@dataclass
class _Walker:
    """The walk's state along one front (see `walk`)."""

    front: Sequence[int]  # candidate indices, cheapest first
    evidence: Evidence
    rule: Rule
    top: int

    def worth(self, index: int) -> tuple[float, float]:
        """What front member `index` is worth to the reader (higher is better)."""
        candidate = self.front[index]
        accuracy = float(self.evidence.shrunk[candidate])
        cost = float(self.evidence.costs[candidate])
        if self.rule.value_per_point is None:
            return accuracy, -cost
        return 100.0 * self.rule.value_per_point * accuracy - cost, 0.0

    def family(self, start: int) -> int:
        """Candidates dearer than front member `start`, within reach: up to the dearest member
        within reach when a knee or a budget limits it, else all (the front itself was picked
        from them on the same data, so a short front does not make a small family)."""
        costs, low = self.evidence.costs, self.evidence.costs[self.front[start]]
        limited = self.top < len(self.front) - 1 or self.rule.budget is not None
        high = self.evidence.costs[self.front[self.top]] if limited else np.inf
        return max(1, int(((costs > low) & (costs <= high)).sum()))

    def move(self, start: int, end: int, kind: Kind = "tested") -> Move:
        family = self.family(start)
        a, b = self.front[start], self.front[end]
        extra = float(self.evidence.costs[b] - self.evidence.costs[a])
        estimate = self.evidence.estimate(b, a, family)
        test = self.evidence.compare(a, b, self.rule.alpha / family)
        if self.knee:
            estimate = replace(estimate, shown=self._knee_shown(b, a, estimate, test))
        return Move(
            start, end, kind, False, test, extra, self.rule.value_per_point, family, estimate
        )

    @property
    def knee(self) -> bool:
        """Neither a value nor a budget: the knee mode."""
        return self.rule.value_per_point is None and self.rule.budget is None

    def _knee_shown(
        self, b: int, a: int, estimate: Estimate, test: ValidationComparison | None
    ) -> bool:
        """In the knee mode nothing prices an expected gain, so a step must be shown: its
        paired gain at alpha shared among the candidates dearer than where the walk stands and
        within reach (as the steps table makes its claims). A step whose extra cost is
        negligible needs only a higher expected accuracy."""
        costs = self.evidence.costs
        if costs[b] - costs[a] <= NEGLIGIBLE_SHARE * float(costs[a]):
            return estimate.shown and estimate.gain > 0
        return estimate.gain > 0 if test is None else test.gain_shown

    def worth_buying(self, move: Move) -> bool:
        """Shown better, and (at a value per point) worth its price at the reader's risk."""
        if not move.shown or move.estimate is None:
            return False
        if self.rule.value_per_point is None:
            return True
        gain = move.estimate.quantile(self.rule.risk)
        return 100.0 * self.rule.value_per_point * gain > move.extra_cost

    def run(self) -> Walk:
        return self._run_knee() if self.knee else self._run_priced()

    def _run_knee(self) -> Walk:
        """Step to the cheapest member within reach shown better than where the walk stands,
        and again from there. Cheapest first, because without a price equals tie to the cheaper:
        comparing the most accurate member with its nearest rival instead would refuse a step
        into a group of equally good members one by one, down to a weak one."""
        current, moves = 0, []
        while True:
            ends = range(current + 1, self.top + 1)
            step = next(
                (m for m in map(self._move_from(current), ends) if self.worth_buying(m)), None
            )
            if step is None:
                break
            moves.append(replace(step, taken=True))
            current = step.end
        if current < self.top:
            moves.append(self.move(current, max(range(current + 1, self.top + 1), key=self.worth)))
        return self._finish(current, moves)

    def _move_from(self, start: int) -> Callable[[int], Move]:
        return lambda end: self.move(start, end)

    def _finish(self, current: int, moves: list[Move]) -> Walk:
        if current == self.top and self.top + 1 < len(self.front):
            moves.append(self.move(current, self.top + 1, self._stop_kind()))
        return Walk(current, tuple(moves), top=self.top)

    def _run_priced(self) -> Walk:
        current, options, moves = 0, list(range(1, self.top + 1)), []
        held: dict[int, int] = {}  # declined against a rival above the walk: member -> rival
        returned: set[int] = set()
        while options:
            best = max([current, *options], key=self.worth)
            if best == current:
                moves.append(self.move(current, max(options, key=self.worth)))
                break
            rival = max([current, *(o for o in options if o < best)], key=self.worth)
            move = replace(self.move(rival, best), origin=current)
            if self.worth_buying(move):
                move = self._unshown(best, rival, [current, *options]) or replace(move, taken=True)
            if move.taken:
                moves.append(move)
                current, options = best, [o for o in options if o > best]
            else:
                # Only `best` drops out: a dearer member worth less than `best` may still be
                # shown better than where the walk stands, and worth its price over it.
                moves.append(move)
                options = [o for o in options if o != best]
                if move.start != current and best not in returned:
                    held[best] = move.start
            # One declined against a rival that has since dropped out is weighed again (once).
            back = {m for m, r in held.items() if m > current and r > current and r not in options}
            held = {m: r for m, r in held.items() if m > current and m not in back}
            options, returned = sorted([*options, *back]), returned | back
        return self._finish(current, moves)

    def _unshown(self, best: int, rival: int, others: list[int]) -> Move | None:
        """`best`, worth buying over `rival`, must also be shown better than every other cheaper
        baseline (None: it is; else the move it failed, declined) where the two fine-tuned
        candidates are one uncorrected comparison: a rival that beat a baseline by luck would
        otherwise carry `best` across the baseline untested (two fine-tuned models as good as
        TF-IDF: one bought in 17% of sweeps at $100 a point, their gain over each other being
        its own expected value).
        Only there: among many, the shrinkage has already taken the rival's luck out of its lead,
        and requiring the test too cost a hosted-shaped study's real gains (regret at $100 a
        point 1.8% to 2.0%)."""
        if not self.evidence.single:
            return None
        current = others[0]
        tuned = self.evidence.tuned
        baselines = [o for o in others if o < best and o != rival and not tuned[self.front[o]]]
        for cheaper in baselines:
            move = self.move(cheaper, best)
            if not move.shown:
                return replace(move, origin=None if cheaper == current else current)
        return None

    def _stop_kind(self) -> Kind:
        next_cost = self.evidence.costs[self.front[self.top + 1]]
        over = self.rule.budget is not None and next_cost > self.rule.budget
        return "budget" if over else "knee"


def walk(
    front: Sequence[int],
    evidence: Evidence,
    rule: Rule = Rule(),
    last: int | None = None,
) -> Walk:
    """Walk a front and return where it stops.

    Args:
        front: Indices of the front's members among the evidence's candidates, cheapest first.
        evidence: Validation evidence of every candidate the front was drawn from.
        rule: The family-wise one-sided level (`alpha`); `value_per_point`, dollars one
            validation accuracy point is worth; `budget`, the most a member may cost; `risk`.
        last: Index of the last member the walk may reach (the knee), None for no limit.
    """
    costs = [float(evidence.costs[i]) for i in front]
    if rule.budget is not None and costs[0] > rule.budget:
        return Walk(0, (), over_budget=True)
    top = len(costs) - 1 if last is None else min(last, len(costs) - 1)
    while rule.budget is not None and top > 0 and costs[top] > rule.budget:
        top -= 1
    return _Walker(front, evidence, rule, top).run()

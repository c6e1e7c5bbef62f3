"""Validation evidence for the choice: paired comparisons and gains corrected for selection.

Every candidate (trial, checkpoint, baseline) was scored on the same validation examples, and its
record says which it got right. Two models are then compared *paired*: per example the difference
of their answers is -1, 0 or +1, and only the examples on which they disagree carry evidence, so
the comparison is much more precise than two accuracies taken as independent samples. A study
recorded before the records were kept is compared unpaired (independent binomials), and the
report says so.

The front was picked from many fine-tuned candidates on this same data, so the best of them
looks better than it is (the winner's curse). `Evidence` corrects for that by empirical Bayes:

- **Equal until shown different.** The fine-tuned candidates tie at their pooled mean unless
  they are shown to differ (their spread larger than noise; `_differ`): a pretest, so that
  equally good configurations tie exactly and the cheapest wins, whatever a point is worth (a
  continuous shrinkage would always leave the luckiest a little ahead).
- **Contenders.** Once they differ, candidates shown worse than the most accurate one (paired,
  one-sided, Bonferroni over their number) are out of the running and keep their own estimates.
- **Shrinkage.** Each contender's deviation from the contenders' mean is shrunk by
  tau^2 / (tau^2 + s_j^2), with tau^2 the spread of their true accuracies estimated by the
  method of moments (zero when the observed spread is no larger than noise: they tie) and s_j^2
  the noise of each deviation (paired: the variance of the model's answers against the
  contenders' consensus per example).

Baselines are not picked from anything: their estimates are their own accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import chi2, norm

from harness.report.significance import ALPHA, POWER


def _z(level: float) -> float:
    return float(norm.ppf(1.0 - level))


@dataclass(frozen=True)
class ValidationComparison:
    """Model B against model A on the validation examples: paired where both recorded which
    examples they got right, else as two independent binomials (`paired` False).

    `alpha` is the one-sided level of `gain_shown` / `loss_shown`; `low`..`high` are the matching
    one-sided bounds of accuracy(B) - accuracy(A) (an interval of coverage 1 - 2 alpha).
    """

    n: int
    accuracy_a: float
    accuracy_b: float
    se: float
    alpha: float = ALPHA
    paired: bool = True

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"need at least one example, got {self.n=}")
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha=}")

    @property
    def difference(self) -> float:
        """accuracy(B) - accuracy(A), as a fraction."""
        return self.accuracy_b - self.accuracy_a

    def _tail(self, shift: float) -> float:
        if self.se == 0.0:
            return 0.0 if shift > 0 else 1.0
        return float(norm.sf(shift / self.se))

    @property
    def p_value(self) -> float:
        """One-sided p-value of "B is no better than A"."""
        return self._tail(self.difference)

    @property
    def p_value_loss(self) -> float:
        """One-sided p-value of "B is no worse than A"."""
        return self._tail(-self.difference)

    @property
    def low(self) -> float:
        return self.difference - _z(self.alpha) * self.se

    @property
    def high(self) -> float:
        return self.difference + _z(self.alpha) * self.se

    @property
    def gain_shown(self) -> bool:
        return self.p_value < self.alpha

    @property
    def loss_shown(self) -> bool:
        return self.p_value_loss < self.alpha

    def examples_needed(self, power: float = POWER) -> int | None:
        """Validation examples that would show the observed difference with the given power, at
        the observed spread per example; None without a difference."""
        delta = abs(self.difference)
        if delta == 0.0 or self.se == 0.0:
            return None
        per_example = self.se**2 * self.n
        return math.ceil((_z(self.alpha) + norm.ppf(power)) ** 2 * per_example / delta**2)


@dataclass(frozen=True)
class Estimate:
    """What the evidence says of buying candidate `better` over `cheaper`: the expected true gain
    in accuracy corrected for selection (a fraction), its posterior spread, and whether the gate
    (`Evidence.shown`) passed at the level it was asked."""

    gain: float
    sd: float
    shown: bool
    pooled: bool  # the contenders tie: `gain` is their pooled mean's
    corrected: bool = True  # False: one comparison, nothing picked from many to correct

    @property
    def probability(self) -> float:
        """The chance the dearer candidate is the better one (normal posterior)."""
        if self.sd == 0.0:
            return 1.0 if self.gain > 0 else 0.0
        return float(norm.cdf(self.gain / self.sd))

    def interval(self, coverage: float = 0.95) -> tuple[float, float]:
        half = float(norm.ppf(0.5 + coverage / 2)) * self.sd
        return self.gain - half, self.gain + half

    def quantile(self, q: float) -> float:
        """The `q` quantile of the true gain (q = 0.5: the mean)."""
        return self.gain + float(norm.ppf(q)) * self.sd


class Evidence:
    """The validation evidence of K candidates, with selection-corrected expected accuracies.

    Args:
        accuracies: Validation accuracy of each candidate.
        correct: Per candidate, which validation examples it got right (None where not recorded:
            every comparison is then unpaired).
        tuned: Per candidate, True for a fine-tuned model (picked from many, so shrunk), False
            for a baseline.
        costs: Per candidate, its cost (the cheapest contender anchors the pretest).
        n: Validation examples (None: unknown; the point estimates decide, untested).
        alpha: One-sided family-wise level of the pretests and gates.
        priced: A value per point weighs each gain against its cost. With two fine-tuned
            candidates nothing was picked from many, so there is no selection to correct: their
            paired gain is its own expected value, and no pretest withholds it (a pretest at alpha
            would miss a +3-point gain on 600 examples half the time, to save an extra cost
            worth 0.05 points). With three or more the pretest guards against the winner's curse.
    """

    def __init__(
        self,
        accuracies: Sequence[float],
        correct: Sequence[np.ndarray | None],
        tuned: Sequence[bool],
        costs: Sequence[float],
        n: int | None,
        alpha: float = ALPHA,
        priced: bool = False,
    ) -> None:
        self.x = np.asarray(accuracies, dtype=float)
        self.costs = np.asarray(costs, dtype=float)
        self.tuned = np.asarray(tuned, dtype=bool)
        self.n = n
        self.alpha = alpha
        self.single = priced and int(self.tuned.sum()) == 2  # one comparison: nothing to correct
        self.paired = bool(n) and all(c is not None and len(c) == n for c in correct)
        self.matrix = (
            np.vstack([np.asarray(c, dtype=float) for c in correct if c is not None])
            if self.paired
            else None
        )
        self.shrunk = self.x.copy()
        self.weight = np.zeros(self.x.size)  # B_j: how much of a contender's deviation is kept
        self.noise = np.zeros(self.x.size)  # s_j^2: the noise of that deviation
        self.best = -1  # the most accurate fine-tuned candidate (once there are two)
        self.contenders = np.flatnonzero(self.tuned)
        self.heterogeneous = self._differ()
        if self.heterogeneous:
            self.contenders = self._contenders()
        self._shrink()

    # --- contrasts ---------------------------------------------------------------------------

    def contrast(self, weights: np.ndarray) -> tuple[float, float]:
        """Estimate and standard error of sum_j w_j x_j: paired per example where recorded."""
        mean = float(weights @ self.x)
        if not self.n:
            return mean, 0.0
        if self.matrix is not None:
            used = np.flatnonzero(weights)  # most contrasts involve two models of many
            per_example = weights[used] @ self.matrix[used]
            return mean, float(per_example.std(ddof=1) / math.sqrt(self.n)) if self.n > 1 else 0.0
        variance = float(np.sum(weights**2 * self.x * (1.0 - self.x)) / self.n)
        return mean, math.sqrt(variance)

    def _unit(self, index: int) -> np.ndarray:
        weights = np.zeros(self.x.size)
        weights[index] = 1.0
        return weights

    def _pooled(self) -> np.ndarray:
        weights = np.zeros(self.x.size)
        weights[self.contenders] = 1.0 / len(self.contenders)
        return weights

    def z(self, weights: np.ndarray) -> float:
        mean, se = self.contrast(weights)
        if se == 0.0:
            return math.inf if mean > 0 else -math.inf
        return mean / se

    def compare(self, a: int, b: int, alpha: float) -> ValidationComparison | None:
        """B against A (None: the validation size is unknown)."""
        if not self.n:
            return None
        _, se = self.contrast(self._unit(b) - self._unit(a))
        return ValidationComparison(self.n, self.x[a], self.x[b], se, alpha, self.paired)

    def shown_better(self, a: int, b: int) -> bool:
        """Is B shown better than A on validation (one-sided paired test at alpha shared among
        the candidates dearer than A)? Without a validation size: when its accuracy is higher."""
        family = max(1, int((self.costs > self.costs[a]).sum()))
        comparison = self.compare(a, b, self.alpha / family)
        return self.x[b] > self.x[a] if comparison is None else comparison.gain_shown

    # --- selection correction ----------------------------------------------------------------

    def _contenders(self) -> np.ndarray:
        tuned = np.flatnonzero(self.tuned)
        if tuned.size < 2 or not self.n:
            return tuned
        best = tuned[np.argmax(self.x[tuned])]
        self.best = int(best)
        bar = _z(self.alpha / (tuned.size - 1))
        worse = [self.z(self._unit(int(best)) - self._unit(int(j))) > bar for j in tuned]
        return tuned[~np.asarray(worse)]

    def _spread(self) -> tuple[np.ndarray, np.ndarray]:
        """Each contender's deviation from the contenders' mean accuracy, and the variance of its
        own noise (paired: of its answers against the contenders' consensus per example)."""
        group = self.contenders
        k = group.size
        deviation = self.x[group] - self.x[group].mean()
        if self.matrix is not None and self.n:
            rows = self.matrix[group]
            noise = (rows - rows.mean(axis=0)).var(axis=1, ddof=1) / self.n * k / (k - 1)
        else:
            noise = self.x[group] * (1.0 - self.x[group]) / (self.n or 1)
        return deviation, np.maximum(noise, 1e-12)

    def _differ(self) -> bool:
        """Are the fine-tuned candidates shown to differ? Two: the dearer shown better than the
        cheaper (one-sided, at alpha). More: their spread shown larger than noise (the
        chi-square of their paired deviations, at alpha), so equal contenders pass it in at most
        alpha of studies. One test at the whole of alpha, not two at half each: the chi-square
        already sees one far-off candidate, and with alpha split a study shaped like the hosted one
        (17 candidates 4 points apart) was seen different in 37% of sweeps, against 46% now."""
        group = self.contenders
        k = group.size
        if k < 2:
            return False
        if not self.n:
            return True
        if k == 2 and self.single:
            return True
        if k == 2:
            cheap, dear = sorted(group.tolist(), key=lambda j: self.costs[j])
            return self.z(self._unit(dear) - self._unit(cheap)) > _z(self.alpha)
        # The noise pooled over the candidates: equal under the null, and each one's own estimate
        # from a small validation set is itself so noisy that dividing by it inflated the
        # statistic (20 equal candidates on 20 examples were seen to differ in 19% of studies).
        deviation, noise = self._spread()
        return float(np.sum(deviation**2) / noise.mean()) > chi2.ppf(1 - self.alpha, k - 1)

    def _shrink(self) -> None:
        group = self.contenders
        k = group.size
        if k < 2:
            return
        deviation, noise = self._spread()
        tau2 = float(np.sum(deviation**2) / (k - 1) - noise.mean()) if self.heterogeneous else 0.0
        weight = max(tau2, 0.0) / (max(tau2, 0.0) + noise)
        if not self.n or self.single:
            weight = np.ones(k)  # no noise known, or no selection: the observed accuracies stand
        self.shrunk[group] = self.x[group].mean() + weight * deviation
        self.weight[group] = weight
        self.noise[group] = noise

    # --- the gain of one candidate over another -----------------------------------------------

    def estimate(self, better: int, cheaper: int, family: int) -> Estimate:
        """The selection-corrected gain of `better` over `cheaper`, and whether it is shown
        (see `_estimate`); uncorrected where the two are the only fine-tuned candidates."""
        estimate = self._estimate(better, cheaper, family)
        return replace(estimate, corrected=False) if self.single else estimate

    def _estimate(self, better: int, cheaper: int, family: int) -> Estimate:
        """The selection-corrected gain of `better` over `cheaper`, and whether it is shown.

        Shown means: within contenders that differ, always (the expected values decide); for a
        contender over a non-contender, the contenders' pooled gain over it at alpha (alpha / 2
        each for the pooled gain and, at alpha / (2 family), the candidate's own gain, once the
        contenders differ); otherwise the paired gain at alpha / `family`.
        """
        inside = set(self.contenders.tolist())
        gain = float(self.shrunk[better] - self.shrunk[cheaper])
        spread = self.weight * self.noise
        if better in inside and cheaper in inside:
            tied = not self.heterogeneous or self.weight[better] == self.weight[cheaper] == 0
            if tied:  # no difference shown between them: as uncertain as the raw difference
                _, se = self.contrast(self._unit(better) - self._unit(cheaper))
                return Estimate(0.0, se, False, True)
            sd = math.sqrt(spread[better] + spread[cheaper])
            return Estimate(gain, sd, True, False)
        if better in inside and better == self.best and self.tuned[cheaper]:
            # `cheaper` is a fine-tuned model already shown worse than this, the best one.
            _, se = self.contrast(self._unit(better) - self._unit(cheaper))
            return Estimate(gain, math.sqrt(se**2 + spread[better]), True, False)
        if better in inside:
            _, se = self.contrast(self._pooled() - self._unit(cheaper))
            sd = math.sqrt(se**2 + spread[better])
            pooled_z = self.z(self._pooled() - self._unit(cheaper))
            if not self.heterogeneous:
                return Estimate(gain, sd, pooled_z > _z(self.alpha), True)
            own_z = gain / sd if sd > 0 else (math.inf if gain > 0 else -math.inf)
            shown = pooled_z > _z(self.alpha / 2) or own_z > _z(self.alpha / (2 * family))
            return Estimate(gain, sd, shown, False)
        weights = self._unit(better) - (
            self._pooled() if cheaper in inside else self._unit(cheaper)
        )
        _, se = self.contrast(weights)
        sd = math.sqrt(se**2 + spread[cheaper])
        raw = self.z(self._unit(better) - self._unit(cheaper))
        return Estimate(gain, sd, raw > _z(self.alpha / family), False)

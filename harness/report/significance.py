"""Is an accuracy gain real? Paired tests of two classifiers scored on the same test examples.

Two models scored on the same test set are paired: per example, both are right, both wrong, or
exactly one is right. Only the discordant examples (one right, the other wrong) carry evidence
about which model is better, which is why a paired test is far more sensitive than comparing two
accuracies as if they came from different samples. Pure functions over boolean "correct" vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class PairedComparison:
    """Model B against model A on the same `n` test examples.

    Attributes:
        n: Test examples compared.
        accuracy_a: Accuracy of A.
        accuracy_b: Accuracy of B.
        only_a: Examples A got right and B got wrong.
        only_b: Examples B got right and A got wrong.
        p_value: Exact McNemar two-sided p-value.
        ci_low: Lower end of the bootstrap interval of accuracy(B) - accuracy(A).
        ci_high: Upper end of that interval.
        alpha: Significance level the verdict uses.
        minimum_detectable: Smallest difference this many examples detect with the given power,
            at the observed discordance; None when none can be detected (or no discordance).
        examples_needed: Test examples needed to detect the observed difference with the given
            power, at the observed discordance; None when there is no difference to detect.
    """

    n: int
    accuracy_a: float
    accuracy_b: float
    only_a: int
    only_b: int
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    minimum_detectable: float | None
    examples_needed: int | None

    @property
    def difference(self) -> float:
        """accuracy(B) - accuracy(A), as a fraction."""
        return self.accuracy_b - self.accuracy_a

    @property
    def significant(self) -> bool:
        """True when the exact McNemar test rejects "no difference" at `alpha`."""
        return self.p_value < self.alpha


def _as_bool(values: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=bool)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence of booleans, got {array.shape=}")
    return array


def mcnemar_exact(
    a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray
) -> float:
    """Exact McNemar test: two-sided binomial test of the discordant pairs against p = 1/2.

    Args:
        a_correct: Per test example, whether model A was right.
        b_correct: The same for model B, in the same example order.

    Returns:
        The two-sided p-value; 1.0 when the models never disagree.

    Raises:
        ValueError: The vectors are empty or of different lengths.
    """
    a, b = _pair(a_correct, b_correct)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_b, only_a + only_b, 0.5, alternative="two-sided").pvalue)


def _pair(
    a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_bool(a_correct, "a_correct"), _as_bool(b_correct, "b_correct")
    if a.size != b.size:
        raise ValueError(f"paired vectors differ in length, got {a.size=} {b.size=}")
    return a, b


def bootstrap_difference_ci(
    a_correct: Sequence[bool] | np.ndarray,
    b_correct: Sequence[bool] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of accuracy(B) - accuracy(A).

    Resampling test examples with replacement and averaging the per-example difference
    (-1, 0 or +1) is the same, in distribution, as drawing the counts of the three outcomes from a
    multinomial; drawing the counts directly costs O(n_resamples) instead of O(n_resamples x n).

    Args:
        a_correct: Per test example, whether model A was right.
        b_correct: The same for model B, in the same example order.
        confidence: Coverage of the interval, e.g. 0.95.
        n_resamples: Bootstrap resamples.
        seed: Seeds numpy's generator, so the same inputs give the same interval.

    Returns:
        (low, high) as fractions of accuracy.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence=}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples=}")
    a, b = _pair(a_correct, b_correct)
    n = a.size
    probabilities = [np.sum(a & ~b) / n, np.sum(a == b) / n, np.sum(~a & b) / n]
    counts = np.random.default_rng(seed).multinomial(n, probabilities, size=n_resamples)
    differences = (counts[:, 2] - counts[:, 0]) / n
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return float(low), float(high)


def examples_needed(
    difference: float, discordant_rate: float, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Test examples a paired comparison needs to detect `difference` (Connor 1987).

    Normal approximation to McNemar's test for paired proportions:
    n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2, with psi the share of
    discordant examples and delta the accuracy difference; psi is assumed to stay at its observed
    value on a larger test set. The exact test used for the verdict is slightly more conservative,
    so read the result as "roughly how many".

    Args:
        difference: The accuracy difference to detect, as a fraction (sign ignored).
        discordant_rate: Share of examples on which exactly one model is right (psi).
        alpha: Two-sided significance level.
        power: Chance of detecting the difference when it is real.

    Returns:
        The number of test examples, or None when there is no difference to detect.
    """
    delta = abs(difference)
    if delta == 0.0:
        return None
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha=} {power=}")
    # Discordance can never be below the difference it produces.
    psi = min(1.0, max(discordant_rate, delta))
    z_alpha, z_power = norm.ppf(1.0 - alpha / 2.0), norm.ppf(power)
    root = z_alpha * math.sqrt(psi) + z_power * math.sqrt(max(psi - delta**2, 0.0))
    return math.ceil(root**2 / delta**2)


def minimum_detectable_difference(
    n: int, discordant_rate: float, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """Smallest accuracy difference `n` paired test examples detect with the given power.

    Inverts `examples_needed` (same approximation) by bisection: the examples needed shrink as the
    difference grows, up to the largest difference the discordance allows (delta = psi).

    Args:
        n: Test examples.
        discordant_rate: Share of examples on which exactly one model is right.
        alpha: Two-sided significance level.
        power: Chance of detecting the difference when it is real.

    Returns:
        The difference as a fraction, or None when even the largest possible one is not detectable
        (or the models never disagree, so there is nothing to detect).
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n=}")
    psi = min(max(discordant_rate, 0.0), 1.0)
    largest = examples_needed(psi, psi, alpha, power) if psi > 0 else None
    if largest is None or largest > n:
        return None
    low, high = 0.0, psi
    for _ in range(60):
        middle = (low + high) / 2.0
        needed = examples_needed(middle, psi, alpha, power)
        if needed is not None and needed <= n:
            high = middle
        else:
            low = middle
    return high


def compare_paired(
    a_correct: Sequence[bool] | np.ndarray,
    b_correct: Sequence[bool] | np.ndarray,
    alpha: float = ALPHA,
    power: float = POWER,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Everything the report says about B against A: test, interval and detectable sizes.

    Args:
        a_correct: Per test example, whether model A was right.
        b_correct: The same for model B, in the same example order.
        alpha: Significance level of the verdict; the interval has coverage 1 - alpha.
        power: Power assumed for the detectable-difference figures.
        n_resamples: Bootstrap resamples.
        seed: Seeds the bootstrap.

    Returns:
        The comparison.
    """
    a, b = _pair(a_correct, b_correct)
    n = a.size
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    low, high = bootstrap_difference_ci(a, b, 1.0 - alpha, n_resamples, seed)
    discordant = (only_a + only_b) / n
    return PairedComparison(
        n=n,
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        only_a=only_a,
        only_b=only_b,
        p_value=mcnemar_exact(a, b),
        ci_low=low,
        ci_high=high,
        alpha=alpha,
        minimum_detectable=minimum_detectable_difference(n, discordant, alpha, power),
        examples_needed=examples_needed((only_b - only_a) / n, discordant, alpha, power),
    )

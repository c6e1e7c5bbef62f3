"""Significance: known p-values, intervals that cover what they should, and sample sizes that
deliver the power they promise (checked by simulation); paired on the test set, unpaired on
validation accuracies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from harness.report.significance import (
    UnpairedComparison,
    bootstrap_difference_ci,
    compare_paired,
    examples_needed,
    mcnemar_exact,
    minimum_detectable_difference,
)


def paired(n: int, only_a: int, only_b: int, both: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with exactly the given counts (the rest: both wrong)."""
    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[:both] = b[:both] = True
    a[both : both + only_a] = True
    b[both + only_a : both + only_a + only_b] = True
    return a, b


def test_mcnemar_all_discordant_one_way() -> None:
    a, b = paired(200, only_a=0, only_b=10, both=170)
    assert mcnemar_exact(a, b) == pytest.approx(2 * 0.5**10)


def test_mcnemar_matches_the_binomial_sum() -> None:
    a, b = paired(100, only_a=3, only_b=10, both=60)
    expected = 2 * sum(math.comb(13, k) for k in range(4)) / 2**13
    assert mcnemar_exact(a, b) == pytest.approx(expected)
    assert mcnemar_exact(a, b) == pytest.approx(binomtest(10, 13, 0.5).pvalue)


def test_mcnemar_without_disagreement_is_one() -> None:
    a, b = paired(50, 0, 0, 40)
    assert mcnemar_exact(a, b) == 1.0


def test_a_a_comparison_is_not_significant() -> None:
    # Same accuracy, different mistakes: 20 examples each way.
    a, b = paired(200, only_a=20, only_b=20, both=160)
    result = compare_paired(a, b)
    assert result.difference == 0.0
    assert result.p_value == pytest.approx(1.0)
    assert not result.significant
    assert result.ci_low < 0 < result.ci_high
    assert result.examples_needed is None


def test_a_large_real_gain_is_significant() -> None:
    a, b = paired(200, only_a=2, only_b=40, both=140)
    result = compare_paired(a, b)
    assert result.difference == pytest.approx(0.19)
    assert result.p_value < 1e-8
    assert result.significant
    assert result.ci_low > 0.1
    assert result.ci_low <= result.difference <= result.ci_high
    assert result.examples_needed is not None and result.examples_needed < 200


def test_bootstrap_is_seeded_and_matches_resampling_indices() -> None:
    a, b = paired(300, only_a=15, only_b=30, both=200)
    first = bootstrap_difference_ci(a, b, seed=7)
    assert first == bootstrap_difference_ci(a, b, seed=7)
    # The multinomial shortcut must agree with the textbook bootstrap over example indices.
    rng = np.random.default_rng(1)
    idx = rng.integers(0, a.size, size=(4000, a.size))
    naive = (b[idx].mean(axis=1) - a[idx].mean(axis=1)).tolist()
    low, high = np.quantile(naive, [0.025, 0.975])
    assert first[0] == pytest.approx(low, abs=0.01)
    assert first[1] == pytest.approx(high, abs=0.01)


def test_identical_models_have_a_zero_width_interval() -> None:
    a, _ = paired(80, 0, 0, 60)
    assert bootstrap_difference_ci(a, a) == (0.0, 0.0)


def test_examples_needed_by_formula() -> None:
    # Connor (1987): delta 0.05, psi 0.10, alpha 0.05, power 0.8 -> 311.6, rounded up.
    assert examples_needed(0.05, 0.10) == 312
    assert examples_needed(-0.05, 0.10) == 312
    assert examples_needed(0.0, 0.10) is None
    # Smaller gains need more examples.
    assert examples_needed(0.01, 0.10) > examples_needed(0.02, 0.10) > 312


def test_examples_needed_delivers_the_promised_power() -> None:
    delta, psi = 0.05, 0.10
    n = examples_needed(delta, psi)
    assert n is not None
    rng = np.random.default_rng(0)
    discordant = rng.binomial(n, psi, size=1500)
    rejected = 0
    for d in discordant:
        # Each discordant example favours B with probability (psi + delta) / (2 psi).
        favour_b = rng.binomial(d, (psi + delta) / (2 * psi))
        rejected += binomtest(int(favour_b), int(d), 0.5).pvalue < 0.05
    # The exact test is a little conservative next to the normal approximation.
    assert 0.7 <= rejected / len(discordant) <= 0.88


def test_minimum_detectable_difference_inverts_examples_needed() -> None:
    mde = minimum_detectable_difference(400, 0.12)
    assert mde is not None
    assert examples_needed(mde, 0.12) <= 400 < examples_needed(mde * 0.98, 0.12)
    assert minimum_detectable_difference(1600, 0.12) < mde


def test_nothing_is_detectable_on_a_tiny_test_set() -> None:
    assert minimum_detectable_difference(2, 0.5) is None
    assert minimum_detectable_difference(100, 0.0) is None


def test_bad_inputs_name_the_value() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar_exact([True, False], [True])
    with pytest.raises(ValueError, match="non-empty"):
        compare_paired([], [])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_difference_ci([True], [False], confidence=1.5)


# --- unpaired: validation accuracies alone ----------------------------------------------------


def test_unpaired_p_value_by_formula() -> None:
    # 0.90 against 0.96 on 200 examples each: Wald statistic with Yates' correction (1/200).
    result = UnpairedComparison(200, 200, 0.90, 0.96)
    se = math.sqrt(0.9 * 0.1 / 200 + 0.96 * 0.04 / 200)
    assert result.standard_error == pytest.approx(se)
    assert result.p_value == pytest.approx(norm.sf((0.06 - 0.005) / se))
    assert result.p_value_loss == pytest.approx(norm.sf((-0.06 - 0.005) / se))
    assert result.gain_shown and not result.loss_shown


@pytest.mark.parametrize(("a", "b"), [(0.80, 0.84), (0.80, 0.86), (0.70, 0.60), (0.5, 0.5)])
def test_unpaired_bound_and_p_value_agree(a: float, b: float) -> None:
    result = UnpairedComparison(300, 300, a, b, alpha=0.05)
    assert (result.low > 0) == result.gain_shown
    assert (result.high < 0) == result.loss_shown
    assert result.low < result.difference < result.high


def test_unpaired_level_holds_for_equal_models() -> None:
    # A/A on 600 examples, independent errors: "gain shown" at most alpha of the time.
    rng = np.random.default_rng(0)
    counts = rng.binomial(600, 0.8, size=(20_000, 2)) / 600
    shown = [UnpairedComparison(600, 600, a, b).gain_shown for a, b in counts]
    assert np.mean(shown) <= 0.05


def test_unpaired_examples_needed_delivers_about_the_promised_power() -> None:
    needed = UnpairedComparison(600, 600, 0.80, 0.85).examples_needed(power=0.8)
    assert needed is not None and 600 < needed < 1000
    rng = np.random.default_rng(1)
    draws = rng.binomial(needed, [0.80, 0.85], size=(2000, 2)) / needed
    power = np.mean([UnpairedComparison(needed, needed, a, b).gain_shown for a, b in draws])
    assert 0.72 <= power <= 0.85  # the continuity correction costs a little power
    assert UnpairedComparison(600, 600, 0.8, 0.8).examples_needed() is None


def test_unpaired_edge_cases_and_bad_inputs() -> None:
    perfect = UnpairedComparison(50, 50, 0.0, 1.0)
    assert perfect.standard_error == 0.0 and perfect.p_value == 0.0 and perfect.gain_shown
    assert UnpairedComparison(50, 50, 1.0, 1.0).p_value == 1.0
    with pytest.raises(ValueError, match="example counts"):
        UnpairedComparison(0, 10, 0.5, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        UnpairedComparison(10, 10, 0.5, 0.5, alpha=0.7)

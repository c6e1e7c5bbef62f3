"""Significance: known p-values, intervals that cover what they should, and sample sizes that
deliver the power they promise (checked by simulation); paired on the test set, and on the
validation set where each model recorded its answers (unpaired in a study recorded before)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from harness.report.evidence import Evidence, ValidationComparison
from harness.report.significance import (
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


# --- on validation: paired where answers were recorded, unpaired before ---------------------


def _evidence(rows: list[np.ndarray | None], n: int) -> Evidence:
    accuracies = [float(np.mean(r)) if r is not None else 0.8 for r in rows]
    return Evidence(accuracies, rows, [True] * len(rows), list(range(len(rows))), n)


def test_paired_validation_comparison_by_formula() -> None:
    a, b = paired(200, only_a=6, only_b=18, both=160)
    result = _evidence([a, b], 200).compare(0, 1, 0.05)
    assert result is not None and result.paired
    per_example = b.astype(float) - a.astype(float)
    se = per_example.std(ddof=1) / math.sqrt(200)
    assert result.se == pytest.approx(se)
    assert result.p_value == pytest.approx(norm.sf(0.06 / se))
    assert result.gain_shown and not result.loss_shown
    assert (result.low > 0) == result.gain_shown and result.low < result.difference < result.high
    # The same accuracies taken as independent samples: a much wider spread.
    unpaired = _evidence([a, None], 200)
    unpaired.x[1] = b.mean()
    loose = unpaired.compare(0, 1, 0.05)
    assert loose is not None and not loose.paired
    assert loose.se == pytest.approx(math.sqrt(0.83 * 0.17 / 200 + 0.89 * 0.11 / 200))
    assert loose.se > 1.4 * result.se


def test_paired_level_holds_for_equal_models() -> None:
    # A/A on 600 shared examples with correlated answers: "gain shown" at most alpha.
    rng = np.random.default_rng(0)
    shown = 0
    for _ in range(4000):
        easy = rng.beta(4.0, 1.0, size=600)
        a, b = rng.random(600) < easy, rng.random(600) < easy
        result = _evidence([a, b], 600).compare(0, 1, 0.05)
        shown += result is not None and result.gain_shown
    assert shown / 4000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)


def test_paired_examples_needed_delivers_about_the_promised_power() -> None:
    # Known cells: only A right 3%, only B right 9%, both right 80%.
    a, b = paired(200, only_a=6, only_b=18, both=160)
    result = _evidence([a, b], 200).compare(0, 1, 0.05)
    assert result is not None
    count = result.examples_needed(power=0.8)
    assert count is not None and 150 < count < 400
    rng = np.random.default_rng(1)
    cells = rng.multinomial(count, [0.03, 0.09, 0.80, 0.08], size=2000)
    shown = 0
    for only_a, only_b, both, _ in cells:
        x, y = paired(count, int(only_a), int(only_b), int(both))
        verdict = _evidence([x, y], count).compare(0, 1, 0.05)
        shown += verdict is not None and verdict.gain_shown
    assert 0.72 <= shown / 2000 <= 0.88


def test_validation_comparison_edge_cases() -> None:
    same = _evidence([np.ones(10, bool), np.ones(10, bool)], 10).compare(0, 1, 0.05)
    assert same is not None and same.se == 0 and not same.gain_shown
    assert same.examples_needed() is None
    assert _evidence([np.ones(10, bool), np.ones(10, bool)], 0).compare(0, 1, 0.05) is None
    with pytest.raises(ValueError, match="alpha"):
        ValidationComparison(10, 0.5, 0.6, 0.1, alpha=0.7)

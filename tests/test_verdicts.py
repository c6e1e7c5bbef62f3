"""The decision rule on simulated studies whose truth is known: pure numpy, no training.

Every simulated sweep draws each candidate's validation and test accuracy (or per-example
correctness) from its true accuracy, forms the Pareto front on validation accuracy against cost
(`harness.sweep.study.pareto_front`, as the report does) and walks it with the report's own rule
(`harness.report.decide.walk`). Each property is checked together with the behaviour it replaced,
so these tests can fail: the old rule (front on test, compare the current pick with every dearer
member by McNemar) buys a dearer model far too often, and choosing on test overstates the
winner's reported accuracy. The last tests check what the study is told: the validation
accuracy of the model a trial (or a checkpoint) delivered.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from harness.records import Cost, EpochResult, Metrics, TrainedModel, TrialResult, TrialSpec
from harness.report.decide import Rule, walk
from harness.report.significance import mcnemar_exact
from harness.sweep.checkpoints import ScoredCheckpoint, add_checkpoint_trial
from harness.sweep.study import pareto_front
from harness.tracking.record import (
    VALID_ACCURACY,
    TrialRecord,
    objective_accuracy,
    result_attrs,
    trial_metrics,
)

N = 600  # validation and test examples
ALPHA = 0.05
SEEDS = 1000


def choose(accuracies: np.ndarray, costs: np.ndarray, n: int = N) -> int:
    """The report's choice among candidates: front on these accuracies, then the walk."""
    front = pareto_front(list(zip(accuracies.tolist(), costs.tolist(), strict=True)))
    result = walk(
        [float(accuracies[i]) for i in front],
        [float(costs[i]) for i in front],
        n,
        Rule(ALPHA),
        candidates=costs.tolist(),
    )
    return front[result.chosen]


def old_choice(correct: np.ndarray, costs: np.ndarray) -> int:
    """The rule this replaced: the front on test accuracy, then from the cheapest, compare the
    current pick with every dearer front member (exact McNemar on the same test examples) and
    jump to any that is significantly better (`--value-per-point` high enough to buy anything)."""
    accuracies = correct.mean(axis=1)
    front = pareto_front(list(zip(accuracies.tolist(), costs.tolist(), strict=True)))
    current = front[0]
    for member in front[1:]:
        gain = accuracies[member] > accuracies[current]
        if gain and mcnemar_exact(correct[current], correct[member]) < ALPHA:
            current = member
    return current


def bound(rate: float, seeds: int) -> float:
    """`rate` plus three binomial standard errors: a margin a correct rule cannot cross by
    chance (about 1 in 700)."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / seeds)


def increasing_costs(count: int) -> np.ndarray:
    # A cent, then 20% dearer each: no step is a negligible extra cost.
    return 0.01 * 1.2 ** np.arange(count)


def test_twenty_equal_candidates_rarely_buy_a_dearer_model() -> None:
    rng = np.random.default_rng(20)
    costs = increasing_costs(20)
    dearer = 0
    for _ in range(SEEDS):
        # Independent errors: the worst case for the unpaired validation test.
        dearer += choose(rng.binomial(N, 0.8, size=20) / N, costs) != 0
    rate = dearer / SEEDS
    assert rate <= bound(ALPHA, SEEDS), f"bought a dearer, no better model in {rate:.1%} of sweeps"


def test_twenty_equal_candidates_with_correlated_errors_stay_below_alpha() -> None:
    # Models trained on the same data get the same examples wrong more often than chance: each
    # example has its own difficulty, every model is right on it with that probability.
    rng = np.random.default_rng(21)
    costs = increasing_costs(20)
    dearer = 0
    for _ in range(SEEDS):
        easy = rng.beta(4.0, 1.0, size=N)  # mean 0.8
        correct = rng.random((20, N)) < easy
        dearer += choose(correct.mean(axis=1), costs) != 0
    assert dearer / SEEDS <= ALPHA


def test_the_old_rule_bought_noise_and_would_fail_the_same_check() -> None:
    rng = np.random.default_rng(22)
    costs = increasing_costs(20)
    seeds = 300  # enough: the old rule is far outside the bound
    dearer = sum(old_choice(rng.random((20, N)) < 0.8, costs) != 0 for _ in range(seeds))
    assert dearer / seeds > bound(ALPHA, seeds)


def test_the_chosen_model_test_accuracy_is_unbiased_when_chosen_on_validation() -> None:
    # 20 candidates slowly improving with cost (0.75 to 0.826): the walk climbs some way.
    rng = np.random.default_rng(23)
    truth = 0.75 + 0.004 * np.arange(20)
    costs = increasing_costs(20)
    seeds = 2000
    on_valid, on_test, best_on_test = [], [], []
    for _ in range(seeds):
        valid = rng.binomial(N, truth) / N
        test = rng.binomial(N, truth) / N  # independent of validation
        chosen = choose(valid, costs)
        on_valid.append(test[chosen] - truth[chosen])
        chosen = choose(test, costs)  # the same rule, run on the test set
        on_test.append(test[chosen] - truth[chosen])
        front = pareto_front(list(zip(test.tolist(), costs.tolist(), strict=True)))
        top = max(front, key=lambda i: test[i])  # the most accurate on the test front
        best_on_test.append(test[top] - truth[top])
    error = np.asarray(on_valid)
    standard_error = float(error.std(ddof=1)) / math.sqrt(seeds)
    # Unbiased: the mean error is within four standard errors (about 0.15 points) of zero...
    assert abs(float(error.mean())) <= 4 * standard_error < 0.002
    # ...while choosing on test overstates the reported accuracy, by far more than that.
    assert float(np.mean(on_test)) > 8 * standard_error
    assert float(np.mean(best_on_test)) > 0.01  # more than a point


@pytest.mark.parametrize("before", [0, 9])
def test_a_real_gain_is_bought_most_of_the_time(before: int) -> None:
    # +5 points on 600 validation examples, right after the cheapest model or behind nine more
    # candidates no better than it (which a rule stepping only to the next neighbour would stop at).
    rng = np.random.default_rng(24 + before)
    truth = np.array([0.80] * (1 + before) + [0.85] * 5)
    costs = increasing_costs(truth.size)
    bought = sum(choose(rng.binomial(N, truth) / N, costs) > before for _ in range(SEEDS))
    assert bought / SEEDS > 0.5


# --- what the study is told ------------------------------------------------------------------


def _result(epochs: tuple[EpochResult, ...], model_ref: str) -> TrialResult:
    return TrialResult(
        spec=TrialSpec(0, 3, 1.0, 16, "all-MiniLM-L6-v2"),
        model=TrainedModel(model_ref=model_ref, epochs=epochs, train_cost=Cost(usd=0.01)),
        metrics=Metrics(accuracy=0.99, macro_f1=0.99, weighted_f1=0.99, mae=None, n_examples=8),
        eval_cost=Cost(usd=0.001),
        wall_seconds=1.0,
        predictions=(),
    )


EPOCHS = tuple(
    EpochResult(n, valid, None, None, Cost(usd=0.003 * n), checkpoint=f"ckpt-{n}")
    for n, valid in ((1, 0.70), (2, 0.80), (3, 0.78))
)


def test_a_trial_records_and_reports_the_validation_accuracy_of_the_model_it_delivered() -> None:
    result = _result(EPOCHS, "final")
    assert result_attrs(result)[VALID_ACCURACY] == 0.78  # its last epoch, not the peak
    assert result_attrs(result)["test_accuracy"] == 0.99  # recorded, never optimised
    assert objective_accuracy(result) == 0.78
    assert trial_metrics(result)["valid_accuracy_final"] == 0.78
    assert TrialRecord.from_attrs(result_attrs(result)).selection_accuracy == 0.78
    # A backend that validated no epoch: the study can only be told test accuracy, and the
    # record says so by having no validation accuracy (the report then notes it).
    blind = _result((), "final")
    assert objective_accuracy(blind) == 0.99 and result_attrs(blind)[VALID_ACCURACY] is None


def test_a_checkpoint_trial_is_told_the_validation_accuracy_of_its_own_epoch() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    parent = study.ask({"n_epochs": optuna.distributions.IntDistribution(1, 3)})
    study.tell(parent, [0.78, 0.01])
    # Epoch 2's model: told its own validation accuracy, not the parent's nor its test score.
    scored = ScoredCheckpoint(0, 2, _result(EPOCHS[:2], "ckpt-2"))
    number, record = add_checkpoint_trial(study, study.trials[0], scored, None, objectives=2)
    assert study.trials[number].values[0] == 0.80
    assert record.valid_accuracy == 0.80 and record.test_accuracy == 0.99

"""The early stopper: which partial curves it stops, and when it refuses to guess."""

from __future__ import annotations

from harness.records import Cost, EpochResult
from harness.sweep.stopping import Curve, FrontStopper
from harness.tracking.record import (
    CHECKPOINT_OF,
    COST_USD_BY_EPOCH,
    VALID_ACCURACY_BY_EPOCH,
    TrialRecord,
)


def _epochs(*points: tuple[float, float]) -> list[EpochResult]:
    """Epoch results from (validation accuracy, cost so far) pairs."""
    return [
        EpochResult(
            epoch=i, valid_accuracy=a, valid_loss=None, train_loss=None, cost_so_far=Cost(c)
        )
        for i, (a, c) in enumerate(points, start=1)
    ]


def _taught(use_cost: bool = True) -> FrontStopper:
    """A stopper that has seen two 3-epoch trials gaining at most 0.05 per later epoch."""
    stopper = FrontStopper(n_validation=1000, use_cost=use_cost)
    stopper.add(Curve((0.70, 0.75, 0.78), (1.0, 2.0, 3.0)))
    stopper.add(Curve((0.80, 0.84, 0.86), (2.0, 4.0, 6.0)))
    return stopper


def test_a_curve_that_cannot_catch_up_is_stopped() -> None:
    # 0.60 + 0.05 + 0.03 + noise < 0.78, and two more epochs at half the first one's 2.0 make
    # at least 4.0: the first trial's model is better for less money.
    assert _taught().should_stop(_epochs((0.60, 2.0)), n_epochs=3)


def test_a_curve_that_may_still_reach_the_front_goes_on() -> None:
    stopper = _taught()
    # Promising: 0.76 after one epoch could beat 0.78 at the same price.
    assert not stopper.should_stop(_epochs((0.76, 1.0)), n_epochs=3)
    # Weak but cheap: finishing costs about 0.15, less than any known model.
    assert not stopper.should_stop(_epochs((0.60, 0.1)), n_epochs=3)


def test_with_accuracy_alone_cost_does_not_save_a_weak_curve() -> None:
    assert _taught(use_cost=False).should_stop(_epochs((0.60, 0.1)), n_epochs=3)
    assert not _taught(use_cost=False).should_stop(_epochs((0.79, 0.1)), n_epochs=3)


def test_no_evidence_no_stopping() -> None:
    stopper = FrontStopper(n_validation=1000)
    assert not stopper.should_stop(_epochs((0.10, 5.0)), n_epochs=3)
    stopper.add(Curve((0.90,), (0.1,)))  # a one-epoch trial says nothing about later epochs
    stopper.add(Curve((0.90, 0.91), (0.1, 0.2)))  # only one trial has run a second epoch
    assert not stopper.should_stop(_epochs((0.10, 5.0)), n_epochs=3)


def test_the_last_epoch_is_never_stopped() -> None:
    assert not _taught().should_stop(_epochs((0.5, 1.0), (0.5, 2.0), (0.5, 3.0)), n_epochs=3)


def test_a_small_validation_split_widens_the_margin() -> None:
    # Ten validation examples: two standard errors are about 0.3, so 0.60 might really be 0.90.
    stopper = FrontStopper(n_validation=10)
    stopper.add(Curve((0.70, 0.75, 0.78), (1.0, 2.0, 3.0)))
    stopper.add(Curve((0.80, 0.84, 0.86), (2.0, 4.0, 6.0)))
    assert not stopper.should_stop(_epochs((0.60, 1.0)), n_epochs=3)


def test_a_trial_and_its_checkpoints_are_one_trial_of_evidence() -> None:
    # Found reading the sweep: it teaches the stopper every completed trial, epoch checkpoints
    # included, and a checkpoint's curve is its trial's first epochs again. One finished
    # 3-epoch trial and its epoch-2 checkpoint read as two trials that had run a second epoch,
    # so a 2-epoch trial was stopped on the evidence of one.
    parent = {VALID_ACCURACY_BY_EPOCH: [0.70, 0.80, 0.82], COST_USD_BY_EPOCH: [1.0, 2.0, 3.0]}
    stopper = FrontStopper(n_validation=1000)
    stopper.add(Curve.of(TrialRecord.from_attrs(parent)))
    for epoch in (1, 2):
        checkpoint = {key: value[:epoch] for key, value in parent.items()}
        stopper.add(Curve.of(TrialRecord.from_attrs({**checkpoint, CHECKPOINT_OF: 0})))
    assert not stopper.should_stop(_epochs((0.60, 2.0)), n_epochs=2)
    # A second trial that ran two epochs is the evidence the rule asks for.
    stopper.add(Curve((0.65, 0.70), (1.0, 2.0)))
    assert stopper.should_stop(_epochs((0.60, 2.0)), n_epochs=2)
    # A checkpoint is still a model: one at least as good for no more money stops a trial.
    alone = FrontStopper(n_validation=1000)
    alone.add(Curve((0.55, 0.60), (1.0, 2.0)))
    alone.add(Curve((0.56, 0.60), (1.0, 2.0)))
    assert not alone.should_stop(_epochs((0.60, 2.0)), n_epochs=2)
    good = {VALID_ACCURACY_BY_EPOCH: [0.90], COST_USD_BY_EPOCH: [1.0], CHECKPOINT_OF: 0}
    alone.add(Curve.of(TrialRecord.from_attrs(good)))
    assert alone.should_stop(_epochs((0.60, 2.0)), n_epochs=2)
